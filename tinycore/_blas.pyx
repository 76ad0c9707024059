"""Row-major GEMM for float32 and float64: a register-blocked loop for small
products, SciPy's Fortran BLAS for the rest.

Every matrix product in tinycore goes through :func:`_gemm`; the other kernel
modules ``cimport`` it, so the GIL is never needed for a product.  The loop
sums each element over p in increasing order, one rounded product and one
rounded addition at a time, so the result does not depend on the instruction
set it was compiled for.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


# --- tile sizes and crossover ----------------------------------------------
#
# TINYCORE_SIMD_LEVEL is the x86-64 level this module is compiled for, read
# from the compiler's own macros (setup.py compiles it once per level): 1 =
# x86-64 baseline (SSE2, 16 registers of 16 bytes), 3 = x86-64-v3 (AVX2: 16
# of 32 bytes), 4 = x86-64-v4 (AVX-512: 32 of 64 bytes).  It chooses the tile
# height only, never the arithmetic nor which products the loop takes: every
# build adds the same products in the same order and sends the same products
# to BLAS, so the builds give bit-identical results (tests/test_simd.py).
#
# A tile is MR rows x NR columns of C whose sums stay in vector registers for
# the whole loop over p.  NR = 32 at every level: GCC 12 vectorises a tile's
# loop over its columns only if it has more than 16 iterations; with 16 or
# fewer it unrolls that loop first and then vectorises the loop over p
# instead, gathering one scalar per row, several times slower (seen with
# -fopt-info-vec, NR = 4 ... 32).  MR = 2 at levels 1 and 3 (8 registers of
# float32 sums at level 3, 16 for float64, which spill a little but still
# beat 2 x 20 and 2 x 24 tiles, as at level 1); MR = 4 at level 4, not
# measured here: its 32 registers hold the 8 or 16 registers of sums.
#
# The crossover was measured on a 2-core AMD EPYC (Zen 3, AVX2 + FMA) against
# SciPy's OpenBLAS on one thread, with this module built for x86-64-v3:
# m, n, k in {4, 8, ..., 128}, every transpose combination, median of 11
# interleaved runs, two sweeps; the thresholds minimise the geometric mean of
# time / best time over the sweep: 1.05 (float32) and 1.02 (float64),
# against 1.23 and 1.14 with BLAS always.  OpenBLAS does a * b + c in one FMA
# instruction, which -ffp-contract=off forbids here, so it wins past a few
# hundred thousand multiply-adds.  One table serves every level, for the
# bit-identical results above, and because the ratio it was measured at
# carries over: where the baseline set runs on its own (a CPU without AVX2),
# OpenBLAS has no FMA either and at most twice the loop's vector width,
# about the 2x that FMA gives it at level 3.  (A forced baseline on an AVX2
# CPU pays for this: there the SSE2 loop meets OpenBLAS's AVX2 code, and
# products near the limits run up to 2x slower than BLAS would.)
# The rules, per dtype (S float32, D float64), work = m * n * k:
#   work <= TINY: any product (the BLAS call costs more than it);
#   n >= NR, B read in place (not transposed): m <= M_DIRECT, work <= W_DIRECT;
#   n >= NR, B transposed, copied in panels:   m <= M_PACKED, work <= W_PACKED;
#   n < NR <= m, A transposed (dW = X^T dZ of a narrow layer), computed as
#     C^T, reading op(A)^T in place: work <= W_NARROW.  Other narrow products
#     would need a transposed copy of A, and lose to BLAS.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define TINYCORE_SIMD_LEVEL 4
    #elif defined(__AVX2__)
    #define TINYCORE_SIMD_LEVEL 3
    #else
    #define TINYCORE_SIMD_LEVEL 1
    #endif
    #define TC_GEMM_NR 32
    #define TC_GEMM_MR_MAX 4
    #define TC_GEMM_KMAX 128
    #define TC_GEMM_NARROW 16
    #if TINYCORE_SIMD_LEVEL >= 4
    #define TC_GEMM_MR_S 4
    #define TC_GEMM_MR_D 4
    #else
    #define TC_GEMM_MR_S 2
    #define TC_GEMM_MR_D 2
    #endif
    #define TC_GEMM_TINY_S 256
    #define TC_GEMM_M_DIRECT_S 64
    #define TC_GEMM_W_DIRECT_S 262144
    #define TC_GEMM_M_PACKED_S 32
    #define TC_GEMM_W_PACKED_S 262144
    #define TC_GEMM_W_NARROW_S 262144
    #define TC_GEMM_TINY_D 256
    #define TC_GEMM_M_DIRECT_D 64
    #define TC_GEMM_W_DIRECT_D 65536
    #define TC_GEMM_M_PACKED_D 32
    #define TC_GEMM_W_PACKED_D 4096
    #define TC_GEMM_W_NARROW_D 262144
    """
    enum:
        TINYCORE_SIMD_LEVEL
        TC_GEMM_NR          # columns of a tile
        TC_GEMM_MR_S        # rows of a tile, float32
        TC_GEMM_MR_D        # rows of a tile, float64
        TC_GEMM_MR_MAX
        TC_GEMM_KMAX        # longest sum the kernel takes (size of a B panel)
        TC_GEMM_NARROW      # up to this many columns: one run-time-wide tile
        TC_GEMM_TINY_S
        TC_GEMM_M_DIRECT_S
        TC_GEMM_W_DIRECT_S
        TC_GEMM_M_PACKED_S
        TC_GEMM_W_PACKED_S
        TC_GEMM_W_NARROW_S
        TC_GEMM_TINY_D
        TC_GEMM_M_DIRECT_D
        TC_GEMM_W_DIRECT_D
        TC_GEMM_M_PACKED_D
        TC_GEMM_W_PACKED_D
        TC_GEMM_W_NARROW_D


cdef inline void _set_scaled_row(floating *acc, floating x, const floating *b,
                                 int n) noexcept nogil:
    cdef int j
    for j in range(n):
        acc[j] = x * b[j]


cdef inline void _add_scaled_row(floating *acc, floating x, const floating *b,
                                 int n) noexcept nogil:
    # acc[j] += x * b[j], vectorised across j: each acc[j] stays one sum over
    # p in increasing order, a product then an addition, each rounded.
    cdef int j
    for j in range(n):
        acc[j] = acc[j] + x * b[j]


cdef inline void _copy_row(floating *c, const floating *acc, int n) noexcept nogil:
    cdef int j
    for j in range(n):
        c[j] = acc[j]


cdef inline void _copy_row_plus(floating *c, const floating *acc, const floating *bias,
                                int n) noexcept nogil:
    # c[j] = acc[j] + bias[j]: the bias added as the sums leave the registers,
    # the same rounded addition a later pass over C would make.
    cdef int j
    for j in range(n):
        c[j] = acc[j] + bias[j]


cdef inline void _store_row(floating *c, const floating *acc, int n,
                            double alpha, double beta) noexcept nogil:
    # c[j] := alpha * acc[j] + beta * c[j], contiguous (vectorised).
    cdef int j
    if beta == 0:                   # C may hold garbage: never read it
        if alpha == 1:              # alpha * acc is then acc, exactly
            for j in range(n):
                c[j] = acc[j]
        else:
            for j in range(n):
                c[j] = <floating>(alpha * acc[j])
    else:
        for j in range(n):
            c[j] = <floating>(alpha * acc[j] + beta * c[j])


cdef inline void _store_row_strided(floating *c, Py_ssize_t sc, const floating *acc,
                                    int n, double alpha, double beta) noexcept nogil:
    # c[j * sc] := alpha * acc[j] + beta * c[j * sc], the same arithmetic.
    cdef int j
    if beta == 0:
        for j in range(n):
            c[j * sc] = <floating>(alpha * acc[j])
    else:
        for j in range(n):
            c[j * sc] = <floating>(alpha * acc[j] + beta * c[j * sc])


cdef inline void _tile(int width, int k,
                       const floating *a, Py_ssize_t sa_i, Py_ssize_t sa_p, int mr,
                       const floating *b, Py_ssize_t sb, int nr,
                       double alpha, double beta, const floating *bias,
                       floating *c, Py_ssize_t sc_i, Py_ssize_t sc_j) noexcept nogil:
    """One MR x width tile: c[r, j] := alpha * sum_p a[r, p] b[p, j] + beta * c[r, j].

    a[r, p] is ``a[r * sa_i + p * sa_p]`` and c[r, j] is ``c[r * sc_i + j * sc_j]``
    (either may be transposed); b[p, j] is ``b[p * sb + j]`` for all ``width``
    columns (B itself or a packed, zero-padded panel).  Only the first ``mr``
    rows and ``nr`` columns are stored.  Requires k >= 1.  With ``bias`` (not
    NULL; then alpha = 1, beta = 0 and sc_j = 1), c[r, j] := sum + bias[j].

    With ``width`` the constant NR the sums stay in registers; a smaller,
    run-time width serves narrow products, with the sums in memory.
    """
    cdef int MR = TC_GEMM_MR_S if floating is float else TC_GEMM_MR_D
    cdef floating acc[TC_GEMM_MR_MAX][TC_GEMM_NR]
    # Rows past the edge repeat the last one: no read out of bounds and no
    # branch in the loop; their sums are computed but never stored.
    cdef const floating *a0 = a
    cdef const floating *a1 = a + min(1, mr - 1) * sa_i
    cdef const floating *a2 = a + min(2, mr - 1) * sa_i
    cdef const floating *a3 = a + min(3, mr - 1) * sa_i
    cdef const floating *bp
    cdef int p, r
    # The sums start from the first product rather than from 0 + it (which
    # differs only in the sign of a zero): zeroing the accumulators first
    # became a memset call per tile, a fifth of the time of a 64x32x32 product.
    # One loop per row (MR is a compile-time constant): GCC then keeps the
    # MR * NR sums in registers.  Written as one loop over rows and columns,
    # GCC's unroll-and-jam fuses the p and p + 1 steps and the sums go back
    # to memory at every step (seen in the assembly).
    _set_scaled_row(acc[0], a0[0], b, width)
    if MR > 1:
        _set_scaled_row(acc[1], a1[0], b, width)
    if MR > 2:
        _set_scaled_row(acc[2], a2[0], b, width)
    if MR > 3:
        _set_scaled_row(acc[3], a3[0], b, width)
    for p in range(1, k):
        bp = b + p * sb
        _add_scaled_row(acc[0], a0[p * sa_p], bp, width)
        if MR > 1:
            _add_scaled_row(acc[1], a1[p * sa_p], bp, width)
        if MR > 2:
            _add_scaled_row(acc[2], a2[p * sa_p], bp, width)
        if MR > 3:
            _add_scaled_row(acc[3], a3[p * sa_p], bp, width)
    if mr == MR and nr == width and sc_j == 1 and alpha == 1 and beta == 0:
        # The common case (whole tile, C = A @ B): bounds known at compile
        # time, so the sums go from registers straight to C.
        if bias != NULL:
            _copy_row_plus(c, acc[0], bias, width)
            if MR > 1:
                _copy_row_plus(c + sc_i, acc[1], bias, width)
            if MR > 2:
                _copy_row_plus(c + 2 * sc_i, acc[2], bias, width)
            if MR > 3:
                _copy_row_plus(c + 3 * sc_i, acc[3], bias, width)
            return
        _copy_row(c, acc[0], width)
        if MR > 1:
            _copy_row(c + sc_i, acc[1], width)
        if MR > 2:
            _copy_row(c + 2 * sc_i, acc[2], width)
        if MR > 3:
            _copy_row(c + 3 * sc_i, acc[3], width)
        return
    for r in range(mr):
        if bias != NULL:
            _copy_row_plus(c + r * sc_i, acc[r], bias, nr)
        elif sc_j == 1:
            _store_row(c + r * sc_i, acc[r], nr, alpha, beta)
        else:
            _store_row_strided(c + r * sc_i, sc_j, acc[r], nr, alpha, beta)


cdef inline void _pack_panel(int k, int nr, int NR, const floating *b,
                             Py_ssize_t sb_p, Py_ssize_t sb_j,
                             floating *panel) noexcept nogil:
    # panel[p, jj] = B[p, jj] for jj < nr, 0 up to NR: rows of NR contiguous
    # elements, whatever B's strides and however few columns are left.
    cdef int p, jj
    if sb_p == 1:
        # B transposed: read each column of the panel contiguously.
        for jj in range(nr):
            for p in range(k):
                panel[p * NR + jj] = b[p + jj * sb_j]
    else:
        for p in range(k):
            for jj in range(nr):
                panel[p * NR + jj] = b[p * sb_p + jj * sb_j]
    for p in range(k):
        for jj in range(nr, NR):
            panel[p * NR + jj] = 0


cdef void _tiled_gemm(int m, int n, int k, double alpha,
                      const floating *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                      const floating *b, Py_ssize_t sb_p, Py_ssize_t sb_j,
                      double beta, const floating *bias, floating *c, Py_ssize_t sc_i,
                      Py_ssize_t sc_j) noexcept nogil:
    """C := alpha * A @ B + beta * C for strided A (m x k), B (k x n), C (m x n).

    Element [i, p] of A is ``a[i * sa_i + p * sa_p]``, and likewise for B and
    C.  Requires 1 <= k <= TC_GEMM_KMAX (the size of the panel buffer).
    ``bias`` (n values, or NULL) is added to every row of C; it requires
    alpha = 1, beta = 0 and sc_j = 1.
    """
    cdef int MR = TC_GEMM_MR_S if floating is float else TC_GEMM_MR_D
    cdef int NR = TC_GEMM_NR
    cdef floating panel[TC_GEMM_KMAX * TC_GEMM_NR]
    cdef const floating *bp = b
    cdef const floating *panel_bias = NULL
    cdef Py_ssize_t sb = sb_p
    cdef int i, j = 0, nr
    if n <= TC_GEMM_NARROW:
        # Narrow: one tile as wide as C, rather than NR columns mostly padding.
        if sb_j != 1:
            _pack_panel(k, n, n, b, sb_p, sb_j, panel)
            bp = panel
            sb = n
        i = 0
        while i < m:
            _tile(n, k, a + i * sa_i, sa_i, sa_p, min(MR, m - i), bp, sb, n,
                  alpha, beta, bias, c + i * sc_i, sc_i, sc_j)
            i += MR
        return
    while j < n:
        nr = min(NR, n - j)
        if sb_j == 1 and nr == NR:
            bp = b + j              # B's rows already hold the NR columns
            sb = sb_p
        else:
            _pack_panel(k, nr, NR, b + j * sb_j, sb_p, sb_j, panel)
            bp = panel
            sb = NR
        if bias != NULL:
            panel_bias = bias + j
        i = 0
        while i < m:
            _tile(NR, k, a + i * sa_i, sa_i, sa_p, min(MR, m - i), bp, sb, nr,
                  alpha, beta, panel_bias, c + i * sc_i + j * sc_j, sc_i, sc_j)
            i += MR
        j += NR


cdef void _small_gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                      double alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      double beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C by tiles; 1 <= k <= TC_GEMM_KMAX."""
    # op(A)[i, p] = a[i * a_i + p * a_p] and op(B)[p, j] = b[p * b_p + j * b_j].
    cdef Py_ssize_t a_i = 1 if trans_a == Trans else lda
    cdef Py_ssize_t a_p = lda if trans_a == Trans else 1
    cdef Py_ssize_t b_p = 1 if trans_b == Trans else ldb
    cdef Py_ssize_t b_j = ldb if trans_b == Trans else 1
    if n < TC_GEMM_NR <= m:
        # Few columns, many rows (the 10 outputs of a classifier): tiles of
        # NR columns would be mostly padding, so compute C^T = op(B)^T @
        # op(A)^T, whose rows are C's columns.  Same products, same order.
        _tiled_gemm(n, m, k, alpha, b, b_j, b_p, a, a_p, a_i, beta, NULL, c, 1, ldc)
    else:
        _tiled_gemm(m, n, k, alpha, a, a_i, a_p, b, b_p, b_j, beta, NULL, c, ldc, 1)


cdef inline bint _use_small_gemm(bint float32, BLAS_Trans trans_a, BLAS_Trans trans_b,
                                 int m, int n, int k) noexcept nogil:
    """Whether :func:`_small_gemm` beats BLAS here (the measured crossover)."""
    cdef long long work = <long long>m * n * k
    # The dtype's thresholds; the rules are the same for both.
    cdef long long tiny = TC_GEMM_TINY_S if float32 else TC_GEMM_TINY_D
    cdef int m_packed = TC_GEMM_M_PACKED_S if float32 else TC_GEMM_M_PACKED_D
    cdef long long w_packed = TC_GEMM_W_PACKED_S if float32 else TC_GEMM_W_PACKED_D
    cdef int m_direct = TC_GEMM_M_DIRECT_S if float32 else TC_GEMM_M_DIRECT_D
    cdef long long w_direct = TC_GEMM_W_DIRECT_S if float32 else TC_GEMM_W_DIRECT_D
    cdef long long w_narrow = TC_GEMM_W_NARROW_S if float32 else TC_GEMM_W_NARROW_D
    if k < 1 or k > TC_GEMM_KMAX:
        return False
    if work <= tiny:
        return True
    if n >= TC_GEMM_NR:
        # Whole panels of C's rows; B transposed costs a copy of it.
        if trans_b == Trans:
            return m <= m_packed and work <= w_packed
        return m <= m_direct and work <= w_direct
    # Narrow C: as C^T, which reads op(A)^T in place only if A is transposed.
    return trans_a == Trans and m >= TC_GEMM_NR and work <= w_narrow


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
    Small products take :func:`_small_gemm`, the others one BLAS call.
    """
    cdef char ta = <char>trans_a
    cdef char tb = <char>trans_b
    cdef float alpha_f = <float>alpha
    cdef float beta_f = <float>beta
    if _use_small_gemm(floating is float, trans_a, trans_b, m, n, k):
        _small_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    # The Fortran interface takes non-const pointers but does not write A or B.
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha_f, <float *>b, &ldb,
              <float *>a, &lda, &beta_f, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb,
              <double *>a, &lda, &beta, c, &ldc)


cdef void _gemm_bias(int m, int n, int k, const floating *a, int lda,
                     const floating *b, int ldb, const floating *bias,
                     floating *c, int ldc) noexcept nogil:
    """C := A @ B + bias (bias: n values added to every row, or NULL), row-major.

    Where the small-product kernel takes the product in C's own orientation,
    the bias is added as each tile is stored, which saves a pass over C;
    otherwise after the product.  Both add the same rounded sum to the same
    bias, so the result is the same either way.
    """
    cdef int i, j
    cdef floating *c_row
    if (bias != NULL and not (n < TC_GEMM_NR <= m)
            and _use_small_gemm(floating is float, NoTrans, NoTrans, m, n, k)):
        _tiled_gemm(m, n, k, 1.0, a, lda, 1, b, ldb, 1, 0.0, bias, c, ldc, 1)
        return
    _gemm(NoTrans, NoTrans, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)
    if bias != NULL:
        for i in range(m):
            c_row = c + i * ldc
            for j in range(n):
                c_row[j] = c_row[j] + bias[j]


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


cpdef void _gemm_bias_memview(const floating[:, ::1] a,   # IN  (m, k)
                              const floating[:, ::1] b,   # IN  (k, n)
                              const floating[::1] bias,   # IN  (n,) or None
                              floating[:, ::1] c):        # OUT (m, n)
    """Test hook: ``c = a @ b + bias`` through :func:`_gemm_bias`.

    Shapes are not checked here; the caller (the tests) passes consistent ones.
    """
    cdef const floating *bias_ptr = NULL
    if bias is not None:
        bias_ptr = &bias[0]
    with nogil:
        _gemm_bias(c.shape[0], c.shape[1], a.shape[1], &a[0, 0], a.shape[1],
                   &b[0, 0], b.shape[1], bias_ptr, &c[0, 0], c.shape[1])


cpdef void _small_gemm_memview(bint trans_a, bint trans_b, double alpha,
                               const floating[:, :] a,   # IN  (m, k), or (k, m) if trans_a
                               const floating[:, :] b,   # IN  (k, n), or (n, k) if trans_b
                               double beta,
                               floating[:, :] c):        # IN/OUT (m, n)
    """Test hook: :func:`_small_gemm` itself, whichever side of the crossover.

    Rows may be padded (a view such as ``big[:, :k]``: leading dimension
    larger than the row), but each row must be contiguous.  Requires
    1 <= k <= TC_GEMM_KMAX; shapes are otherwise not checked.
    """
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t size = sizeof(floating)
    if not 1 <= k <= TC_GEMM_KMAX:
        raise ValueError(f"k = {k} outside the kernel's 1..{TC_GEMM_KMAX}")
    if ((a.shape[1] > 1 and a.strides[1] != size) or (b.shape[1] > 1 and b.strides[1] != size)
            or (c.shape[1] > 1 and c.strides[1] != size)):
        raise ValueError("rows must be contiguous")
    with nogil:
        _small_gemm(Trans if trans_a else NoTrans, Trans if trans_b else NoTrans,
                    m, n, k, alpha, &a[0, 0], <int>(a.strides[0] // size),
                    &b[0, 0], <int>(b.strides[0] // size),
                    beta, &c[0, 0], <int>(c.strides[0] // size))


def _gemm_uses_kernel(bint float32, bint trans_a, bint trans_b, int m, int n, int k):
    """Test hook: whether :func:`_gemm` takes the small-product kernel (else BLAS)."""
    return _use_small_gemm(float32, Trans if trans_a else NoTrans,
                           Trans if trans_b else NoTrans, m, n, k)


def _simd_level():
    """The TINYCORE_SIMD_LEVEL this module was compiled for (1, 3 or 4)."""
    return TINYCORE_SIMD_LEVEL
