# Typed BLAS wrappers shared by every kernel module (cimport from here).
from cython cimport floating

# Products up to this many multiply-adds run on the calling thread in
# OpenBLAS, whatever its thread count (a quarter of its own limit).
cdef enum:
    BLAS_ONE_THREAD_WORK = 65536

cdef enum BLAS_Trans:
    NoTrans = 110   # ord('n')
    Trans = 116     # ord('t')

cdef void _gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                double alpha, const floating *a, int lda,
                const floating *b, int ldb,
                double beta, floating *c, int ldc) noexcept nogil

cdef void _gemm_bias(int m, int n, int k, const floating *a, int lda,
                     const floating *b, int ldb, const floating *bias,
                     floating *c, int ldc) noexcept nogil

cdef void _column_sums(const floating *x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       floating *out) noexcept nogil

cdef bint _gemm_is_small(bint float32, BLAS_Trans trans_a, BLAS_Trans trans_b,
                         int m, int n, int k) noexcept nogil

cdef bint _gemm_tiles_fuse() noexcept nogil
cdef int _blas_threads() noexcept nogil
cdef bint _blas_can_hold_one_thread() noexcept nogil
cdef void _blas_hold_one_thread() noexcept nogil
cdef void _blas_release_threads() noexcept nogil
