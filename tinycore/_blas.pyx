"""Row-major GEMM over SciPy's Fortran BLAS, for float32 and float64.

Every matrix product in tinycore goes through :func:`_gemm`; the other kernel
modules ``cimport`` it, so the GIL is never needed for a product.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


# Below this many multiply-adds (m * n * k), a plain loop beats the BLAS call,
# whose fixed cost is about 0.1 us here (measured on 2-core AMD EPYC with
# SciPy's OpenBLAS: 4x4x4 loop 0.05 us vs sgemm 0.10 us, 6x6x6 0.17 vs 0.13).
# It serves the tiny layers of teaching examples (1-1-1 chains).
cdef enum:
    SMALL_GEMM_MAX = 128


cdef void _small_gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                      double alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      double beta, floating *c, int ldc) noexcept nogil:
    # Row-major, every element one dot product accumulated in double.
    cdef int i, j, p
    cdef double total
    cdef bint ta = trans_a == Trans, tb = trans_b == Trans
    for i in range(m):
        for j in range(n):
            total = 0.0
            for p in range(k):
                total += (<double>(a[p * lda + i] if ta else a[i * lda + p])
                          * (b[j * ldb + p] if tb else b[p * ldb + j]))
            if beta == 0:           # C may hold garbage: never read it
                c[i * ldc + j] = <floating>(alpha * total)
            else:
                c[i * ldc + j] = <floating>(alpha * total + beta * c[i * ldc + j])


# BLAS is column-major and tinycore's arrays are row-major (C order).  A
# row-major matrix read as column-major is its transpose, so the row-major
#     C = op(A) @ op(B)            (m x n) = (m x k) @ (k x n)
# is the column-major
#     C^T = op(B)^T @ op(A)^T      (n x m) = (n x k) @ (k x m)
# which is one Fortran GEMM call with the operands swapped (B before A), m and n
# swapped, and the same transpose flags.  No copy is ever made.
cdef void _gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                double alpha, const floating *a, int lda,
                const floating *b, int ldb,
                double beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, all row-major.

    ``lda``, ``ldb`` and ``ldc`` are the row strides (in elements) of A, B and C
    as stored.  With ``beta == 0`` C is overwritten and may hold garbage.
    """
    cdef char ta = <char>trans_a
    cdef char tb = <char>trans_b
    cdef float alpha_f = <float>alpha
    cdef float beta_f = <float>beta
    if <long long>m * n * k <= SMALL_GEMM_MAX:
        _small_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    # The Fortran interface takes non-const pointers but does not write A or B.
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha_f, <float *>b, &ldb,
              <float *>a, &lda, &beta_f, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb,
              <double *>a, &lda, &beta, c, &ldc)


cpdef void _gemm_memview(bint trans_a, bint trans_b, double alpha,
                         const floating[:, ::1] a,   # IN  (m, k), or (k, m) if trans_a
                         const floating[:, ::1] b,   # IN  (k, n), or (n, k) if trans_b
                         double beta,
                         floating[:, ::1] c):        # IN/OUT (m, n)
    """Test hook: ``c = alpha * op(a) @ op(b) + beta * c`` through :func:`_gemm`.

    Shapes are not checked here; the caller (the tests) passes consistent ones.
    """
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    with nogil:
        _gemm(Trans if trans_a else NoTrans, Trans if trans_b else NoTrans,
              m, n, k, alpha, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
              beta, &c[0, 0], c.shape[1])
