"""Row-major GEMM for float32 and float64: a register-tiled loop for small
products (its tile in C, with GCC's vector extensions), SciPy's Fortran BLAS
for the rest.

Every matrix product in tinycore goes through :func:`_gemm`; the other kernel
modules ``cimport`` it, so the GIL is never needed for a product.  The loop
sums each element over p in increasing order, one fused multiply-add (one
rounding) at a time where the instruction set has FMA (x86-64-v3 and v4),
one rounded product and one rounded addition where it has not (the SSE2
baseline).  So the AVX2 and AVX-512 sets give bit-identical products, and
the baseline differs from them in rounding only.
"""
import ctypes
import os

from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from cython cimport floating
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm


# --- the register tile ---------------------------------------------------
#
# TINYCORE_SIMD_LEVEL is the x86-64 level this module is compiled for, read
# from the compiler's own macros (setup.py compiles it once per level): 1 =
# x86-64 baseline (SSE2, 16 registers of 16 bytes), 3 = x86-64-v3 (AVX2: 16
# of 32 bytes), 4 = x86-64-v4 (AVX-512: 32 of 64 bytes).  It chooses the
# tile's width, and whether a multiply-add is fused (levels 3 and 4 have FMA,
# level 1 has not), never the order of the sums nor which products the loop
# takes: every build adds the same products in the same order and sends the
# same products to BLAS, so levels 3 and 4 give bit-identical results, and
# level 1 the same up to rounding (tests/test_simd.py).
#
# A tile is MR = 4 rows x NR columns of C whose sums stay in registers for the
# whole loop over p; NR is two vectors (16 float32 or 8 float64 at level 3).
# Per step p it loads the two vectors of B's row p once, and for each of the
# four rows broadcasts a[r, p] and makes two multiply-adds: 6 loads for 8
# FMAs (16 arithmetic instructions without FMA), which two load ports keep up
# with.  At level 4 a tall tile of 8 rows comes first wherever 8 rows are
# left (16 sums, 10 loads for 16 FMAs): 8 independent sums are exactly what
# two FMA ports of latency 4 need, so the 4-row tile stalls on any delay.
# On a 2-core Intel Xeon (family 6, model 207), one core, the tall tile took
# a 32x32x32 product from 473 to 424 ns and a 64x32x256 one from 6.67 to
# 5.83 us (best of 3 x 7 timings of 10^5 products in a C loop); on one
# thread a T5 step from 48.5 to 46.8 us and T2 from 5.56 to 5.40 us (median
# over 8 and 4 pairs of processes, old build and new alternately, of each
# process's fastest block of 2,000 steps).  At level 3 an 8-row tile would
# need all 16 vector registers for its sums, and timed 12-19% slower than 4
# rows.  Large products (see _tiled_gemm) take a wide tile instead, at
# level 4 6 rows of four vectors (64 float32 columns).  Which tile computes
# a row changes nothing in its sum: same products, same order.
# The tile is written in C with GCC's vector extensions because GCC, left to
# vectorise a plain loop over a 2 x 32 tile, reloaded each B vector for every
# row (10 loads per step): that kernel was load-bound at 45 GFLOP/s on a
# 64x32x32 product, where this one makes 73 (one Zen 3 core, whose sgemm
# peak is about 85; the tile then rounded every product, without FMA).  At
# level 4 the vectors are 64 bytes (NR = 32 float32): on a Zen 5 EPYC, whose AVX-512
# units are full width, that took a T5 training step (ten 32-wide layers,
# batch 64) from 48.9 to 34.6 us and T2 from 6.05 to 4.89 us against 32-byte
# vectors in the same build.  Fusing the multiply-add took T5 from 62 to 53
# us on a 2-core Intel Xeon with AVX-512, whose two vector ports share the
# multiplies and the additions (same build, before and after).
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define TINYCORE_SIMD_LEVEL 4
    #elif defined(__AVX2__)
    #define TINYCORE_SIMD_LEVEL 3
    #else
    #define TINYCORE_SIMD_LEVEL 1
    #endif
    #if !defined(__GNUC__)
    #error "tinycore's GEMM tile uses GCC vector extensions: build with GCC or Clang"
    #endif
    #if TINYCORE_SIMD_LEVEL >= 4
    #define TC_VEC_BYTES 64
    #elif TINYCORE_SIMD_LEVEL >= 3
    #define TC_VEC_BYTES 32
    #else
    #define TC_VEC_BYTES 16
    #endif
    #if TC_VEC_BYTES >= 32
    #include <immintrin.h>
    #endif
    /* Rows of a tile: TC_GEMM_MR, and TC_GEMM_MR_TALL where the registers
       hold twice as many sums (AVX-512's 32 vector registers: 16 sums, 2 B
       vectors and the broadcasts; AVX2's 16 would spill them). */
    #define TC_GEMM_MR 4
    #if TC_VEC_BYTES == 64
    #define TC_GEMM_MR_TALL 8
    #else
    #define TC_GEMM_MR_TALL TC_GEMM_MR
    #endif
    #define TC_GEMM_NR_S (2 * TC_VEC_BYTES / 4)
    #define TC_GEMM_NR_D (2 * TC_VEC_BYTES / 8)
    /* The wide tile of large products (see _tiled_gemm): at level 4, 6 rows
       of 4 vectors (24 sums; 4 loads of B and 6 broadcasts for 24
       multiply-adds, where the 8 x 2 tile makes 10 for 16); elsewhere the
       tall tile.  Too wide for the small products: a 32-wide layer would
       be half padding. */
    #if TC_VEC_BYTES == 64
    #define TC_GEMM_MR_WIDE 6
    #define TC_GEMM_NV_WIDE 4
    #else
    #define TC_GEMM_MR_WIDE TC_GEMM_MR_TALL
    #define TC_GEMM_NV_WIDE 2
    #endif
    #define TC_GEMM_NR_WIDE_S (TC_GEMM_NV_WIDE * TC_VEC_BYTES / 4)
    #define TC_GEMM_NR_WIDE_D (TC_GEMM_NV_WIDE * TC_VEC_BYTES / 8)
    #define TC_GEMM_NR_MAX 32      /* the widest two-vector tile */
    #define TC_GEMM_SUMS_MAX 384   /* elements of the largest tile */
    #define TC_GEMM_KMAX 256
    /* Longest panel of B read in place (when its rows hold the tile's
       columns) rather than packed: see _tiled_gemm. */
    #define TC_GEMM_IN_PLACE_K 32
    /* TC_MADD_T(x, v, s): s + x * v for a scalar x and vectors v, s.  Where
       the level has FMA (x86-64-v3 and v4, so also a -march=native build on
       such a CPU) it is one fused multiply-add, rounded once: the tile then
       makes one instruction per multiply-add instead of two, and on CPUs
       whose multiplies and additions share two vector ports (Intel's) that
       doubles its speed.  Elsewhere the product is rounded, then the sum. */
    #if defined(__FMA__) && TC_VEC_BYTES >= 32
    #define TC_TILE_FMA 1
    #else
    #define TC_TILE_FMA 0
    #endif
    #if TC_TILE_FMA && TC_VEC_BYTES == 64
    #define TC_MADD_float(x, v, s) ((__typeof__(s))_mm512_fmadd_ps(                \\
        _mm512_set1_ps(x), (__m512)(v), (__m512)(s)))
    #define TC_MADD_double(x, v, s) ((__typeof__(s))_mm512_fmadd_pd(               \\
        _mm512_set1_pd(x), (__m512d)(v), (__m512d)(s)))
    #elif TC_TILE_FMA
    #define TC_MADD_float(x, v, s) ((__typeof__(s))_mm256_fmadd_ps(                \\
        _mm256_set1_ps(x), (__m256)(v), (__m256)(s)))
    #define TC_MADD_double(x, v, s) ((__typeof__(s))_mm256_fmadd_pd(               \\
        _mm256_set1_pd(x), (__m256d)(v), (__m256d)(s)))
    #else
    #define TC_MADD_float(x, v, s) ((s) + (x) * (v))
    #define TC_MADD_double(x, v, s) ((s) + (x) * (v))
    #endif
    /* Keep a vector in a register.  Tuned for Zen (-march=native there),
       GCC folds the load of each B vector into every multiply that uses it:
       12 loads a step instead of 6, and a tile 1.5 times slower (seen in the
       assembly and timed); an empty asm that "changes" the register stops it. */
    #if defined(__AVX512F__)
    #define TC_IN_REGISTER(v) __asm__("" : "+v"(v))
    #elif defined(__x86_64__) || defined(__i386__)
    #define TC_IN_REGISTER(v) __asm__("" : "+x"(v))
    #else
    #define TC_IN_REGISTER(v) ((void)0)
    #endif

    /* tc_tile_T (MR = TC_GEMM_MR rows) and tc_tall_tile_T (TC_GEMM_MR_TALL):
       the sums s[r, j] = sum_p a[r, p] b[p, j] of one MR x NR tile,
       p in increasing order from the first product (one rounded product and
       one rounded addition per step; -ffp-contract=off keeps them apart).
       a[r, p] is a[r * sa_i + p * sa_p]; rows r >= mr repeat row mr - 1, so
       nothing past A is read; b[p, j] is b[p * sb + j], NR columns.  With c,
       the whole tile is stored at c[r * ldc + j] (plus bias[j] if bias is
       not NULL); without, the sums go to out[r * NR + j].  Requires k >= 1
       and, always, room for a tile at out (GCC cannot tell that a call with
       c never stores there, and warns if it may be NULL).
       With init, the sums go on from init[r * ld_init + j] (a tile of sums
       over the earlier p, as the same code stored them): sums longer than
       one panel are taken a panel of p at a time, and come out as the same
       bits as in one pass, every step rounded as it would be.
       One body for both precisions: the macro only names the element type. */
    #define TC_DEFINE_TILE_BODY(T, NAME, MR, NV)                                \\
    static inline __attribute__((always_inline)) void                           \\
    NAME##_body(int k, const T *a, Py_ssize_t sa_i,                             \\
                            Py_ssize_t sa_p, int mr, const T *b,                \\
                            Py_ssize_t sb, const T *init,                       \\
                            Py_ssize_t ld_init, const T *bias, T *c,            \\
                            Py_ssize_t ldc, T *out)                             \\
    {                                                                           \\
        typedef T vec __attribute__((vector_size(TC_VEC_BYTES)));               \\
        typedef T vec_u __attribute__((vector_size(TC_VEC_BYTES),               \\
                                       aligned(sizeof(T))));                    \\
        enum { W = TC_VEC_BYTES / sizeof(T) };                                  \\
        const T *row[MR];                                                       \\
        vec sum[MR][NV], bv[NV];                                                \\
        int r, v, p;                                                            \\
        for (r = 0; r < MR; r++)                                                \\
            row[r] = a + (r < mr ? r : mr - 1) * sa_i;                          \\
        if (init != NULL) {                                                     \\
            for (r = 0; r < MR; r++)                                            \\
                for (v = 0; v < NV; v++)                                        \\
                    sum[r][v] = *(const vec_u *)(init + r * ld_init + v * W);   \\
            p = 0;                                                              \\
        } else {                                                                \\
            for (v = 0; v < NV; v++)                                            \\
                bv[v] = *(const vec_u *)(b + v * W);                            \\
            for (r = 0; r < MR; r++)                                            \\
                for (v = 0; v < NV; v++)                                        \\
                    sum[r][v] = row[r][0] * bv[v];                              \\
            p = 1;                                                              \\
        }                                                                       \\
        for (; p < k; p++) {                                                    \\
            for (v = 0; v < NV; v++) {                                          \\
                bv[v] = *(const vec_u *)(b + p * sb + v * W);                   \\
                TC_IN_REGISTER(bv[v]);                                          \\
            }                                                                   \\
            for (r = 0; r < MR; r++)                                            \\
                for (v = 0; v < NV; v++)                                        \\
                    sum[r][v] = TC_MADD_##T(row[r][p * sa_p], bv[v], sum[r][v]); \\
        }                                                                       \\
        if (c == NULL) {                                                        \\
            for (r = 0; r < MR; r++)                                            \\
                for (v = 0; v < NV; v++)                                        \\
                    *(vec_u *)(out + (r * NV + v) * W) = sum[r][v];             \\
            return;                                                             \\
        }                                                                       \\
        if (bias != NULL) {                                                     \\
            for (v = 0; v < NV; v++)                                            \\
                bv[v] = *(const vec_u *)(bias + v * W);                         \\
            for (r = 0; r < MR; r++)                                            \\
                for (v = 0; v < NV; v++)                                        \\
                    sum[r][v] = sum[r][v] + bv[v];                              \\
        }                                                                       \\
        for (r = 0; r < MR; r++)                                                \\
            for (v = 0; v < NV; v++)                                            \\
                *(vec_u *)(c + r * ldc + v * W) = sum[r][v];                    \\
    }
    #define TC_DEFINE_TILE(T, NAME, MR, NV)                                     \\
    TC_DEFINE_TILE_BODY(T, NAME, MR, NV)                                        \\
    static inline void NAME(int k, const T *a, Py_ssize_t sa_i,                 \\
                            Py_ssize_t sa_p, int mr, const T *b,                \\
                            Py_ssize_t sb, const T *init,                       \\
                            Py_ssize_t ld_init, const T *bias, T *c,            \\
                            Py_ssize_t ldc, T *out)                             \\
    {                                                                           \\
        NAME##_body(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c,        \\
                    ldc, out);                                                  \\
    }
    /* The wide tile, for large products, where A's steps are known: one
       body for A read in place (sa_p = 1) and one for A packed into slivers
       (sa_i = 1, sa_p = MR), each compiled with them as constants.  With
       them variables, GCC kept a pointer per row of A and added the step to
       each at every p: 6 scalar additions a step beside the 24
       multiply-adds; with constants, one index for all six rows.
       On a 2-core Xeon (family 6, model 167), by columns on both cores,
       alternated processes: dW 2048x2048x256 300-322 -> 315-325 GFLOP/s,
       forward 256x2048x1024 283-300 -> 293-312, a T4 step 31.6-32.5 ->
       30.0-31.7 ms (5 alternations each).  The small tiles keep one inlined
       body: specialised too, T2 and T5 steps timed no faster.  The third
       body (any other steps) is for completeness: _tiled_gemm gives the
       wide tile no other A.  A 12 x 32 wide tile, so specialised, was
       slower on one core than 6 x 64: 114-123 against 148-162 GFLOP/s
       forward, 131-141 against 156-172 for dX and dW (3 alternations). */
    #define TC_DEFINE_WIDE_TILE(T, NAME, MR, NV)                                \\
    TC_DEFINE_TILE_BODY(T, NAME, MR, NV)                                        \\
    static void NAME(int k, const T *a, Py_ssize_t sa_i,                        \\
                     Py_ssize_t sa_p, int mr, const T *b,                       \\
                     Py_ssize_t sb, const T *init,                              \\
                     Py_ssize_t ld_init, const T *bias, T *c,                   \\
                     Py_ssize_t ldc, T *out)                                    \\
    {                                                                           \\
        if (sa_p == 1)                                                          \\
            NAME##_body(k, a, sa_i, 1, mr, b, sb, init, ld_init, bias, c,       \\
                        ldc, out);                                              \\
        else if (sa_i == 1 && sa_p == MR)                                       \\
            NAME##_body(k, a, 1, MR, mr, b, sb, init, ld_init, bias, c,         \\
                        ldc, out);                                              \\
        else                                                                    \\
            NAME##_body(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c,    \\
                        ldc, out);                                              \\
    }
    TC_DEFINE_TILE(float, tc_tile_float, TC_GEMM_MR, 2)
    TC_DEFINE_TILE(double, tc_tile_double, TC_GEMM_MR, 2)
    #if TC_GEMM_MR_TALL > TC_GEMM_MR
    TC_DEFINE_TILE(float, tc_tall_tile_float, TC_GEMM_MR_TALL, 2)
    TC_DEFINE_TILE(double, tc_tall_tile_double, TC_GEMM_MR_TALL, 2)
    #else
    /* No taller tile at this level: the name is the short one. */
    #define tc_tall_tile_float tc_tile_float
    #define tc_tall_tile_double tc_tile_double
    #endif
    #if TC_GEMM_NV_WIDE > 2
    TC_DEFINE_WIDE_TILE(float, tc_wide_tile_float, TC_GEMM_MR_WIDE, TC_GEMM_NV_WIDE)
    TC_DEFINE_WIDE_TILE(double, tc_wide_tile_double, TC_GEMM_MR_WIDE, TC_GEMM_NV_WIDE)
    #else
    /* No wide tile at this level: the tall one. */
    #define tc_wide_tile_float tc_tall_tile_float
    #define tc_wide_tile_double tc_tall_tile_double
    #endif

    /* tc_pack_transposed_float: panel[p * nr + j] = b[j * ldb + p] for the
       k x nr panel of a transposed float32 B (dX = dZ W^T reads W so), nr a
       float32 tile's width (a multiple of W).  At levels 3 and 4 by blocks of W x W elements
       transposed in registers (W = 8 or 16: loads of W consecutive p, a
       fixed sequence of shuffles, stores of W consecutive j); what is left
       of k, and level 1, element by element.  A copy: no rounding. */
    #if TC_VEC_BYTES >= 32
    #if TC_VEC_BYTES == 64
    #define TC_V(op) _mm512_##op
    typedef __m512 tc_vec_float;
    #else
    #define TC_V(op) _mm256_##op
    typedef __m256 tc_vec_float;
    #endif
    #define TC_BLOCK (TC_VEC_BYTES / 4)
    static inline void tc_transpose_block(const float *src, Py_ssize_t ld,
                                          float *dst, Py_ssize_t ldd)
    {
        tc_vec_float r[TC_BLOCK], t[TC_BLOCK];
        int j;
        for (j = 0; j < TC_BLOCK; j++)
            r[j] = TC_V(loadu_ps)(src + j * ld);
        for (j = 0; j < TC_BLOCK; j += 2) {  /* pairs of rows, interleaved */
            t[j] = TC_V(unpacklo_ps)(r[j], r[j + 1]);
            t[j + 1] = TC_V(unpackhi_ps)(r[j], r[j + 1]);
        }
        for (j = 0; j < TC_BLOCK; j += 4) {  /* 4 x 4 blocks within each lane */
            r[j] = TC_V(shuffle_ps)(t[j], t[j + 2], 0x44);
            r[j + 1] = TC_V(shuffle_ps)(t[j], t[j + 2], 0xEE);
            r[j + 2] = TC_V(shuffle_ps)(t[j + 1], t[j + 3], 0x44);
            r[j + 3] = TC_V(shuffle_ps)(t[j + 1], t[j + 3], 0xEE);
        }
        /* then the 128-bit lanes: four of them, or two */
    #if TC_VEC_BYTES == 64
        for (j = 0; j < 4; j++) {
            t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
            t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xDD);
            t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
            t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xDD);
        }
        for (j = 0; j < 8; j++) {
            r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
            r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
        }
    #else
        for (j = 0; j < 4; j++) {
            t[j] = r[j];
            r[j] = _mm256_permute2f128_ps(t[j], r[j + 4], 0x20);
            r[j + 4] = _mm256_permute2f128_ps(t[j], r[j + 4], 0x31);
        }
    #endif
        for (j = 0; j < TC_BLOCK; j++)
            TC_V(storeu_ps)(dst + j * ldd, r[j]);
    }
    #else
    #define TC_BLOCK 0
    #endif
    static void tc_pack_transposed_float(int k, int nr, const float *b, Py_ssize_t ldb,
                                         float *panel)
    {
        int p = 0, j;
    #if TC_BLOCK > 0
        for (; p + TC_BLOCK <= k; p += TC_BLOCK)
            for (j = 0; j < nr; j += TC_BLOCK)
                tc_transpose_block(b + j * ldb + p, ldb, panel + p * nr + j, nr);
    #endif
        for (; p < k; p++)
            for (j = 0; j < nr; j++)
                panel[p * nr + j] = b[j * ldb + p];
    }
    """
    enum:
        TINYCORE_SIMD_LEVEL
        TC_TILE_FMA         # 1 if the tile fuses each multiply-add
        TC_GEMM_MR          # rows of a tile
        TC_GEMM_MR_TALL     # rows of a tall tile (TC_GEMM_MR where there is none)
        TC_GEMM_NR_S        # columns of a tile, float32
        TC_GEMM_NR_D        # columns of a tile, float64
        TC_GEMM_NR_MAX      # the widest of them at any level (not the wide tile)
        TC_GEMM_MR_WIDE     # rows of a wide tile (large products)
        TC_GEMM_NR_WIDE_S   # columns of a wide tile, float32
        TC_GEMM_NR_WIDE_D   # columns of a wide tile, float64
        TC_GEMM_SUMS_MAX    # elements of the largest tile
        TC_GEMM_KMAX        # longest panel of B (longer sums: in blocks of p)
        TC_GEMM_IN_PLACE_K  # longest panel of B read in place
    void tc_tile_float(int k, const float *a, Py_ssize_t sa_i, Py_ssize_t sa_p, int mr,
                       const float *b, Py_ssize_t sb, const float *init,
                       Py_ssize_t ld_init, const float *bias, float *c,
                       Py_ssize_t ldc, float *out) noexcept nogil
    void tc_tile_double(int k, const double *a, Py_ssize_t sa_i, Py_ssize_t sa_p, int mr,
                        const double *b, Py_ssize_t sb, const double *init,
                        Py_ssize_t ld_init, const double *bias, double *c,
                        Py_ssize_t ldc, double *out) noexcept nogil
    void tc_tall_tile_float(int k, const float *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                            int mr, const float *b, Py_ssize_t sb, const float *init,
                            Py_ssize_t ld_init, const float *bias,
                            float *c, Py_ssize_t ldc, float *out) noexcept nogil
    void tc_tall_tile_double(int k, const double *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                             int mr, const double *b, Py_ssize_t sb, const double *init,
                             Py_ssize_t ld_init, const double *bias,
                             double *c, Py_ssize_t ldc, double *out) noexcept nogil
    void tc_wide_tile_float(int k, const float *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                            int mr, const float *b, Py_ssize_t sb, const float *init,
                            Py_ssize_t ld_init, const float *bias,
                            float *c, Py_ssize_t ldc, float *out) noexcept nogil
    void tc_wide_tile_double(int k, const double *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                             int mr, const double *b, Py_ssize_t sb, const double *init,
                             Py_ssize_t ld_init, const double *bias,
                             double *c, Py_ssize_t ldc, double *out) noexcept nogil
    void tc_pack_transposed_float(int k, int nr, const float *b, Py_ssize_t ldb,
                                  float *panel) noexcept nogil


# --- the crossover ----------------------------------------------------------
#
# Measured on a 2-core AMD EPYC (Zen 3, AVX2 + FMA) against SciPy's OpenBLAS
# on one thread, with this module built for x86-64-v3: each of m, n, k in
# {4, 8, ..., 256} (and n = 10), every transpose combination, both dtypes,
# kernel and BLAS called alternately in a loop without the GIL, the best of
# three sweeps.  The thresholds below minimise the geometric mean of
# time / best time over the sweep: 1.016 (float32) and 1.022 (float64),
# against 1.50 and 1.30 with BLAS always and 1.08 and 1.06 with the kernel
# always.  Beyond about a million multiply-adds OpenBLAS wins: it packs A and
# B into cache-sized blocks, which this kernel then did not (it packs B's
# longer panels since, and on one BLAS thread takes larger products: see
# the next section; the line against two BLAS threads was not moved).  One table serves
# every level, so that every level sends the same products to BLAS (a forced
# baseline on an AVX2 CPU pays for this: its SSE2 tile meets OpenBLAS's AVX2
# code).
# Not re-tuned on the Zen 5 EPYC (AVX-512 tile against OpenBLAS's SkylakeX
# kernels on two threads): there BLAS already wins from about half a million
# float32 multiply-adds (a 64x256x64 product: 10.4 us against the tile's
# 15.8), a range no T1-T5 product falls in; moving the line for one machine
# would cost the single-core AVX2 machines it was measured on.
# The rules, per dtype (S float32, D float64), work = m * n * k, k <= KMAX:
#   work <= TINY: any product (the BLAS call costs more than it);
#   n >= WIDE: work <= W_WIDE (a transposed B is copied into panels);
#   n < WIDE <= m, A transposed (dW = X^T dZ of a narrow layer), computed as
#     C^T, reading op(A)^T in place: work <= W_NARROW.  Other narrow products
#     would need a transposed copy of A, and lose to BLAS.
cdef extern from *:
    """
    #define TC_GEMM_WIDE 16
    #define TC_GEMM_TINY_S 1024
    #define TC_GEMM_W_WIDE_S 1048576
    #define TC_GEMM_W_NARROW_S 1048576
    #define TC_GEMM_TINY_D 4096
    #define TC_GEMM_W_WIDE_D 262144
    #define TC_GEMM_W_NARROW_D 1048576
    """
    enum:
        TC_GEMM_WIDE        # C at least this wide: tiles of C's own rows
        TC_GEMM_TINY_S
        TC_GEMM_W_WIDE_S
        TC_GEMM_W_NARROW_S
        TC_GEMM_TINY_D
        TC_GEMM_W_WIDE_D
        TC_GEMM_W_NARROW_D


cdef enum TileKind:
    TILE_SHORT = 0      # TC_GEMM_MR rows, two vectors wide
    TILE_TALL = 1       # TC_GEMM_MR_TALL rows, two vectors wide
    TILE_WIDE = 2       # TC_GEMM_MR_WIDE rows, TC_GEMM_NR_WIDE_* columns (large products)


cdef inline void _tile(TileKind kind, int k, const floating *a, Py_ssize_t sa_i,
                       Py_ssize_t sa_p, int mr, const floating *b, Py_ssize_t sb,
                       const floating *init, Py_ssize_t ld_init,
                       const floating *bias, floating *c, Py_ssize_t ldc,
                       floating *out) noexcept nogil:
    # One tile of the given kind (every kind the same sums, in the same order).
    if floating is float:
        if kind == TILE_WIDE:
            tc_wide_tile_float(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)
        elif kind == TILE_TALL:
            tc_tall_tile_float(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)
        else:
            tc_tile_float(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)
    else:
        if kind == TILE_WIDE:
            tc_wide_tile_double(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)
        elif kind == TILE_TALL:
            tc_tall_tile_double(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)
        else:
            tc_tile_double(k, a, sa_i, sa_p, mr, b, sb, init, ld_init, bias, c, ldc, out)


cdef inline void _store_sums(const floating *sums, int NR, int mr, int nr,
                             double alpha, double beta, const floating *bias,
                             floating *c, Py_ssize_t sc_i, Py_ssize_t sc_j) noexcept nogil:
    """The first mr x nr of a tile's sums into C: c[r, j] := alpha * s + beta * c[r, j],
    or s + bias[j] with a bias (then alpha = 1, beta = 0).  C is never read
    when beta = 0, so it may hold garbage."""
    cdef int r, j
    cdef const floating *s
    cdef floating *c_row
    for r in range(mr):
        s = sums + r * NR
        c_row = c + r * sc_i
        for j in range(nr):
            if bias != NULL:
                c_row[j * sc_j] = s[j] + bias[j]
            elif beta == 0:
                # alpha * s is s, exactly, when alpha is 1.
                c_row[j * sc_j] = s[j] if alpha == 1 else <floating>(alpha * s[j])
            else:
                c_row[j * sc_j] = <floating>(alpha * s[j] + beta * c_row[j * sc_j])


cdef inline void _pack_panel(int k, int nr, int NR, const floating *b,
                             Py_ssize_t sb_p, Py_ssize_t sb_j,
                             floating *panel) noexcept nogil:
    # panel[p, jj] = B[p, jj] for jj < nr, 0 up to NR: rows of NR contiguous
    # elements, whatever B's strides and however few columns are left.
    # Row by row of the panel, also for a transposed B (sb_j != 1): writing
    # contiguously beat reading contiguously by a fifth (32 x 16 panels).
    # A whole float32 panel of a transposed B (dX = dZ W^T in every layer's
    # backward pass) is transposed in registers instead, by blocks: on a
    # 2-core Xeon that took a 64x32x32 dZ W^T from 2.13 to 1.78 us (against
    # 1.8 for the untransposed product) and T5 from about 50 to 45 us.
    cdef int p, jj
    cdef const floating *src
    cdef floating *dst
    if floating is float:
        if sb_p == 1 and nr == NR:
            # A whole panel of a transposed B: by blocks in registers.
            tc_pack_transposed_float(k, NR, b, sb_j, panel)
            return
    if sb_j == 1:
        # Rows of contiguous columns: a unit step the compiler can see, which
        # it copies by vectors (with the step a variable it went element by
        # element, and a 64x256x64 float32 product spent a fifth of its time
        # packing: 80 GFLOP/s against 105 for one whose B needs no panel).
        for p in range(k):
            src = b + p * sb_p
            dst = panel + p * NR
            for jj in range(nr):
                dst[jj] = src[jj]
            for jj in range(nr, NR):
                dst[jj] = 0
        return
    for p in range(k):
        for jj in range(nr):
            panel[p * NR + jj] = b[p * sb_p + jj * sb_j]
        for jj in range(nr, NR):
            panel[p * NR + jj] = 0


cdef inline void _load_sums(floating *sums, int NR, int rows, int mr, int nr,
                            const floating *c, Py_ssize_t sc_i,
                            Py_ssize_t sc_j) noexcept nogil:
    # The sums so far of a tile (rows x NR) at C's edge, back from C (as
    # _store_sums stored them, alpha = 1, beta = 0), the tile's rows and
    # columns past C's edge 0.
    cdef int r, j
    for r in range(rows):
        for j in range(NR):
            sums[r * NR + j] = c[r * sc_i + j * sc_j] if r < mr and j < nr else 0


# --- large products: B packed a block of panels at a time -------------------
#
# A product past TC_GEMM_BLOCKED_WORK multiply-adds packs B a block of
# panels at a time (each block of p), reading B's rows along the block's
# width, and takes C's rows in blocks of TC_GEMM_MC, every panel of the
# block down one row block before the next row block: each tile's A rows
# stay in the L2 cache across the block's panels, and the panel streams
# from L2 down the rows.  Its tiles are the wide ones (at AVX-512 6 rows x
# 64 columns, elsewhere the tall tile), and a transposed A (X^T in dW =
# X^T dZ) is packed into slivers of a tile's rows.  Every tile computes the
# same sums in the same order, and however p is blocked each block goes on
# from the last one's sums in C: the bits are those of the small products'
# tiles, at every level.
# A read in place, a block of p is as long as TC_GEMM_KC (2,048: the
# whole sum of every T4 product), so a tile's sums stay in registers from
# the first step to the last; the block then holds as many panels as fit
# in TC_GEMM_B_BLOCK_BYTES (at k = 2,048 one).  Packed, A keeps to blocks
# of TC_GEMM_KMAX, so that its MC x kc block stays in L2 beside B's.
# Packed a panel at a time, a row-major B (W in the forward product, dZ in
# dW) was read 128 bytes per row, each row 8 KB from the last (a 2048-wide
# layer): a new page and a missed line every row, which the prefetchers do
# not follow; and the rows of a 2048-row dW (A is X^T, 2 MB) were read
# again from L3 for every panel.  On a 2-core Xeon (family 6, model 167,
# AVX-512), one core, a T4 step's products one after the other (each
# finding the previous one's operands in cache, not its own), median
# GFLOP/s of forward 256x2048x1024 and 256x2048x2048, dW 2048x2048x256,
# dX = dZ W^T 256x2048x2048 and dW 1024x2048x256:
#   panel by panel, 8 x 32 tiles   (about 81 ms a T4 step on one thread)
#   blocked, 8 x 32 tiles          126-131 125-134 132-142 130-139 124-136  (63-66 ms of products)
#   blocked, 6 x 64 tiles          142-145 143-145 142-149 145-148 148-149  (59 ms)
#   SciPy's OpenBLAS, one thread   108-114 107-108 155     152-154 138-139  (65 ms)
#   MKL (PyTorch), one thread      165-170 165-167 176-182 167-169 176-180  (50 ms)
# and a T4 step on one thread took 60-61 ms.  In a C loop, a 6 x 64 tile
# beat 8 x 32, 12 x 32, 14 x 32, 4 x 64, 5 x 64, 6 x 48, 8 x 48 and 9 x 48
# (forward 256x2048x2048: 155-163 GFLOP/s against 125-134 for 8 x 32): per
# step it makes 24 multiply-adds for 4 loads of B and 6 broadcasts of A.
# Those blocks were of 256 steps of p and 512 columns: a T4 product of
# 2,048 steps stored every tile to C and loaded it back 7 times, and the
# loads stalled its tiles (5-10% of a product's samples in perf, on the
# loads of C).  Whole sums of p in blocks of one panel, against that, on
# the same Xeon, one core, median GFLOP/s of forward 256x2048x1024 and
# 256x2048x2048 and dX 256x2048x2048 (4 alternations of processes):
#   blocks of 256 x 512            133-150 133-143 136-142
#   blocks of 2,048 x 64           148-157 144-153 152-155
# and T4 steps (two threads, by columns) 34.3-36.0 ms against 36.7-38.0 (5
# alternations).  A block of 256 KB or 1 MB of B instead of 512 KB, A
# blocks of 4,096 steps, or all of C's rows in one block with A read in
# place were no better; nor 1 MB blocks for the packed A's (dW's) sake.
# T3's halves' products (12.8 million multiply-adds at most) took the same
# speed either way, but with 8 x 32 tiles their step took about 3% longer
# blocked (0.55 against 0.53 ms, three pairs of processes), and with 6 x
# 64 tiles no less: hence the line at 2^25.
# The buffer is one per thread (B's block and a packed A's, kc x MC, of the
# widest type: 1 MB), allocated the first time a thread needs it and
# freed when the thread ends, so a steady-state step allocates nothing.
cdef extern from *:
    """
    #include <pthread.h>
    #include <stdlib.h>
    #define TC_GEMM_B_BLOCK_BYTES 524288   /* B's block: kc x nc, nc as wide as fits */
    #define TC_GEMM_KC 2048                /* longest block of p, A read in place */
    #define TC_GEMM_MC 240
    #define TC_GEMM_BLOCKED_WORK 33554432
    #define TC_GEMM_BLOCK_BYTES (TC_GEMM_B_BLOCK_BYTES + TC_GEMM_KMAX * TC_GEMM_MC * sizeof(double))
    _Static_assert(TC_GEMM_KC * TC_GEMM_NR_WIDE_S * sizeof(float) <= TC_GEMM_B_BLOCK_BYTES
                   && TC_GEMM_KC * TC_GEMM_NR_WIDE_D * sizeof(double) <= TC_GEMM_B_BLOCK_BYTES,
                   "a block of B holds a whole panel at least");
    static pthread_key_t tc_block_key;
    static pthread_once_t tc_block_once = PTHREAD_ONCE_INIT;
    static int tc_block_key_ok = 0;
    static void tc_block_key_make(void)
    {
        tc_block_key_ok = pthread_key_create(&tc_block_key, free) == 0;
    }
    /* This thread's block buffer (TC_GEMM_BLOCK_BYTES, 64-byte aligned), or
       NULL if it cannot have one (the caller then packs a panel at a time). */
    static void *tc_block_buffer(void)
    {
        void *buffer;
        pthread_once(&tc_block_once, tc_block_key_make);
        if (!tc_block_key_ok)
            return NULL;
        buffer = pthread_getspecific(tc_block_key);
        if (buffer == NULL) {
            if (posix_memalign(&buffer, 64, TC_GEMM_BLOCK_BYTES) != 0)
                return NULL;
            if (pthread_setspecific(tc_block_key, buffer) != 0) {
                free(buffer);
                return NULL;
            }
        }
        return buffer;
    }
    """
    enum:
        TC_GEMM_B_BLOCK_BYTES   # bytes of the buffer's B block (its A block follows)
        TC_GEMM_KC              # longest block of p with A read in place (KMAX if packed)
        TC_GEMM_MC              # rows of C per row block (a multiple of every tile's)
        TC_GEMM_BLOCKED_WORK    # multiply-adds from which a product is blocked
    void *tc_block_buffer() noexcept nogil


cdef inline void _pack_block(int kc, int nc, int NR, const floating *b,
                             Py_ssize_t sb_p, Py_ssize_t sb_j,
                             floating *packed) noexcept nogil:
    # The kc x nc block of B at b as panels of NR columns, panel q at
    # packed + q * kc * NR (the last one padded with zeros).  A row-major B
    # is read row by row along the block's width (see above); a transposed
    # one is read along p already, panel by panel, and so is a single panel.
    cdef int p, q, jj, nr, n_panels = (nc + NR - 1) // NR
    cdef const floating *src
    cdef floating *dst
    if sb_j != 1 or n_panels == 1:
        for q in range(n_panels):
            _pack_panel(kc, min(NR, nc - q * NR), NR, b + q * NR * sb_j, sb_p, sb_j,
                        packed + q * kc * NR)
        return
    for p in range(kc):
        src = b + p * sb_p
        for q in range(n_panels):
            nr = min(NR, nc - q * NR)
            dst = packed + q * kc * NR + p * NR
            # A loop the compiler copies by vectors: memcpy of a variable
            # size was a library call per panel and row (256 bytes).
            for jj in range(nr):
                dst[jj] = src[q * NR + jj]
            for jj in range(nr, NR):
                dst[jj] = 0


cdef inline void _pack_a_block(int mc, int kc, const floating *a, Py_ssize_t sa_i,
                               Py_ssize_t sa_p, floating *packed) noexcept nogil:
    # The mc x kc block of a transposed A as slivers of TC_GEMM_MR_WIDE rows
    # (a wide tile's), p by p: element [i, p] at packed[((i // MR) * kc + p)
    # * MR + i % MR] (a tile then reads its rows' p-th elements side by
    # side).  Read in place, each p of a tile's rows is a new line of A,
    # half of it used: twice the lines of an untransposed A for the L1
    # cache to hold beside the panel of B.  Rows past mc are left as they
    # are: never read.  A whole sliver's step is copied in a size the
    # compiler sees (two moves, inline): with the size a variable, each was
    # a library call, 3.4% of a T4 step's perf samples (a 2-core Xeon,
    # family 6, model 167), which took dW 2048x2048x256 by columns from
    # 284-303 to 291-306 GFLOP/s and a T4 step from 32.3-33.4 to 31.4-33.8 ms
    # (5 and 6 alternations of processes, with _pack_block's loop for B).
    cdef int s, p, r, rows
    cdef const floating *src
    cdef floating *dst
    for s in range((mc + TC_GEMM_MR_WIDE - 1) // TC_GEMM_MR_WIDE):
        rows = min(TC_GEMM_MR_WIDE, mc - s * TC_GEMM_MR_WIDE)
        for p in range(kc):
            src = a + s * TC_GEMM_MR_WIDE * sa_i + p * sa_p
            dst = packed + (s * kc + p) * TC_GEMM_MR_WIDE
            if sa_i == 1 and rows == TC_GEMM_MR_WIDE:
                memcpy(dst, src, TC_GEMM_MR_WIDE * sizeof(floating))
            elif sa_i == 1:
                memcpy(dst, src, rows * sizeof(floating))
            else:
                for r in range(rows):
                    dst[r] = src[r * sa_i]


cdef inline void _panel_tiles(int i0, int i1, int kc, int nr, int NR, bint first,
                              bint last, double alpha, const floating *a,
                              Py_ssize_t sa_i, Py_ssize_t sa_p, const floating *bp,
                              Py_ssize_t sb, double beta, const floating *panel_bias,
                              floating *c, Py_ssize_t sc_i, Py_ssize_t sc_j,
                              bint wide, bint a_packed, floating *sums) noexcept nogil:
    # Rows i0 <= i < i1 of one panel of C (nr of its NR columns at c) for one
    # block of p, in wide tiles if ``wide`` (NR is then theirs): a points
    # at A[i0, the block's first p] (or at its block packed by
    # _pack_a_block, if ``a_packed``), c at C[i0, the panel's first
    # column], bp at the panel of B (row stride sb).
    cdef bint plain = alpha == 1 and beta == 0 and sc_j == 1
    cdef bint whole_panel = nr == NR
    cdef const floating *tile_bias = panel_bias if last else NULL
    cdef floating *c_tile
    cdef const floating *a_tile
    cdef TileKind kind
    cdef int i = i0, mr, rows
    if a_packed:
        sa_i = 1
        sa_p = TC_GEMM_MR_WIDE
    while i < i1:
        # Tall tiles while a whole one fits, then short ones: the rows
        # past C's end that a tile computes (repeating its last row)
        # are never more than a short tile's.  Wide tiles all the way.
        if wide:
            kind = TILE_WIDE
            rows = TC_GEMM_MR_WIDE
        elif i1 - i >= TC_GEMM_MR_TALL:
            kind = TILE_TALL
            rows = TC_GEMM_MR_TALL
        else:
            kind = TILE_SHORT
            rows = TC_GEMM_MR
        mr = min(rows, i1 - i)
        c_tile = c + (i - i0) * sc_i
        if a_packed:
            a_tile = a + (i - i0) * kc      # sliver (i - i0) / MR, MR * kc long
        else:
            a_tile = a + (i - i0) * sa_i
        if plain and whole_panel and mr == rows:
            # The common case: the sums go from registers straight
            # to C (and come back from C for the next block of p).
            _tile(kind, kc, a_tile, sa_i, sa_p, mr, bp, sb,
                  NULL if first else c_tile, sc_i, tile_bias, c_tile, sc_i, sums)
        else:
            if not first:
                _load_sums(sums, NR, rows, mr, nr, c_tile, sc_i, sc_j)
            _tile(kind, kc, a_tile, sa_i, sa_p, mr, bp, sb,
                  NULL if first else sums, NR, NULL, NULL, 0, sums)
            if last:
                _store_sums(sums, NR, mr, nr, alpha, beta, panel_bias, c_tile, sc_i, sc_j)
            else:
                _store_sums(sums, NR, mr, nr, 1.0, 0.0, NULL, c_tile, sc_i, sc_j)
        i += rows


cdef inline int _even_block(int k, int longest) noexcept nogil:
    # The length of k's blocks of p, as few as ``longest`` allows and of
    # equal length (784 = 4 x 196 rather than 3 x 256 + 16): a short last
    # block would store and reload every tile for a few steps.
    cdef int blocks = (k + longest - 1) // longest
    return (k + blocks - 1) // blocks


cdef void _tiled_gemm(int m, int n, int k, double alpha,
                      const floating *a, Py_ssize_t sa_i, Py_ssize_t sa_p,
                      const floating *b, Py_ssize_t sb_p, Py_ssize_t sb_j,
                      double beta, const floating *bias, floating *c, Py_ssize_t sc_i,
                      Py_ssize_t sc_j) noexcept nogil:
    """C := alpha * A @ B + beta * C for strided A (m x k), B (k x n), C (m x n).

    Element [i, p] of A is ``a[i * sa_i + p * sa_p]``, and likewise for B and
    C.  Requires k >= 1.  A sum longer than the panel buffer (TC_GEMM_KMAX)
    is taken in blocks of p, C holding the sums so far between them, which
    requires beta = 0.  ``bias`` (n values, or NULL) is added to every row of
    C; it requires alpha = 1, beta = 0 and sc_j = 1.
    """
    cdef int NR = TC_GEMM_NR_S if floating is float else TC_GEMM_NR_D
    cdef floating panel[TC_GEMM_KMAX * TC_GEMM_NR_MAX]
    cdef floating sums[TC_GEMM_SUMS_MAX]
    cdef floating *packed = panel
    cdef floating *packed_a = NULL     # A's block, packed if A is transposed
    cdef const floating *a_block
    cdef const floating *bp
    cdef Py_ssize_t sb
    cdef bint in_place, first, last, blocked = False
    cdef int i0, i1, j, jc, nc, nr, pc, kc, q
    # Small products: a panel of B at a time (or B itself), every row of C
    # down it.  Large ones: a block of panels, C's rows in blocks (above).
    cdef int block_cols = NR, block_rows = m
    cdef int block_k = _even_block(k, TC_GEMM_KMAX)
    if <long long>m * n * k >= TC_GEMM_BLOCKED_WORK and n > NR:
        packed = <floating *>tc_block_buffer()
        if packed == NULL:
            packed = panel
        else:
            blocked = True
            block_rows = TC_GEMM_MC
            NR = TC_GEMM_NR_WIDE_S if floating is float else TC_GEMM_NR_WIDE_D
            if sa_p == 1:
                block_k = _even_block(k, TC_GEMM_KC)
            # As many panels as the block's bytes hold (one at least: the
            # _Static_assert beside TC_GEMM_KC), the packed A block after them.
            block_cols = <int>(TC_GEMM_B_BLOCK_BYTES // sizeof(floating) // block_k) // NR * NR
            if sa_p != 1:
                packed_a = packed + block_k * block_cols
    jc = 0
    while jc < n:
        nc = min(block_cols, n - jc)
        pc = 0
        while pc < k:
            kc = min(block_k, k - pc)
            first = pc == 0
            last = pc + kc == k
            # B's rows already hold the panel's NR columns, and either lie
            # end to end or are few: read in place.  A longer strided panel
            # maps its rows onto a few sets of the L1 cache, which then
            # misses on them (an unpacked 64x256x256 product took 33
            # GFLOP/s on a Zen 4 core, packed 110).
            in_place = (not blocked and nc == NR and sb_j == 1
                        and (sb_p == NR or kc <= TC_GEMM_IN_PLACE_K))
            if not in_place:
                _pack_block(kc, nc, NR, b + pc * sb_p + jc * sb_j, sb_p, sb_j, packed)
            i0 = 0
            while i0 < m:
                i1 = min(i0 + block_rows, m)
                a_block = a + i0 * sa_i + pc * sa_p
                if packed_a != NULL:
                    _pack_a_block(i1 - i0, kc, a_block, sa_i, sa_p, packed_a)
                    a_block = packed_a
                for q in range((nc + NR - 1) // NR):
                    j = jc + q * NR
                    nr = min(NR, n - j)
                    if in_place:
                        bp = b + pc * sb_p + j
                        sb = sb_p
                    else:
                        bp = packed + q * kc * NR
                        sb = NR
                    _panel_tiles(i0, i1, kc, nr, NR, first, last, alpha,
                                 a_block, sa_i, sa_p, bp, sb, beta,
                                 bias + j if bias != NULL else NULL,
                                 c + i0 * sc_i + j * sc_j, sc_i, sc_j,
                                 blocked, packed_a != NULL, sums)
                i0 = i1
            pc += kc
        jc += nc


cdef void _small_gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                      double alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      double beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C by tiles; k >= 1, and beta = 0
    if k > TC_GEMM_KMAX."""
    # op(A)[i, p] = a[i * a_i + p * a_p] and op(B)[p, j] = b[p * b_p + j * b_j].
    cdef Py_ssize_t a_i = 1 if trans_a == Trans else lda
    cdef Py_ssize_t a_p = lda if trans_a == Trans else 1
    cdef Py_ssize_t b_p = 1 if trans_b == Trans else ldb
    cdef Py_ssize_t b_j = ldb if trans_b == Trans else 1
    if n < TC_GEMM_WIDE <= m:
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
    if k < 1 or k > TC_GEMM_KMAX:
        return False
    if work <= (TC_GEMM_TINY_S if float32 else TC_GEMM_TINY_D):
        return True
    if n >= TC_GEMM_WIDE:
        return work <= (TC_GEMM_W_WIDE_S if float32 else TC_GEMM_W_WIDE_D)
    # Narrow C: as C^T, which reads op(A)^T in place only if A is transposed.
    return (trans_a == Trans and m >= TC_GEMM_WIDE
            and work <= (TC_GEMM_W_NARROW_S if float32 else TC_GEMM_W_NARROW_D))


# --- past the crossover, on one thread -----------------------------------------
#
# The crossover above weighs the tiles against a BLAS that may split a
# product across threads.  Where it may not (held to one thread by a split
# training step, or set to one), float32 tiles with fused multiply-adds take
# every product of at least TC_GEMM_MIN_ROWS rows that they can take in
# C's orientation or as C^T: with B packed into panels they run near the
# core's peak.  On a 2-core Zen 4 EPYC (117 GFLOP/s of FMA per core), the
# products of T3's halves (64-row) took 109, 114, 111, 114 and 92 GFLOP/s in
# a C loop (fwd 64x784x256, dW 784x64x256, fwd 64x256x128, dW 256x64x128,
# dX 64x128x256 NT), against 86, 95, 85, 87 and 84 through SciPy's OpenBLAS
# (SkylakeX kernels, one thread); T4's (256x1024x2048 NN, 2048x256x2048 TN)
# 103 and 105 against 96 and 102.  On a 2-core Xeon (family 6, model 167)
# T3's halves' products took 160-174 GFLOP/s against OpenBLAS's 109-146,
# and T4's, blocked in wide tiles, 142-149 against 107-155 (the table
# above).  Fewer rows pay for a packed panel read by too few tiles.
# Level 1 has no FMA (and its tile half the width), so it keeps to the
# crossover.
# On two BLAS threads _gemm leaves large products to the BLAS; a float32
# training step instead splits them by C's columns between two threads in
# tiles, the BLAS held to one thread (_plan's SPLIT_COLUMNS).  T4's forward
# products (256x2048x1024, 256x2048x2048) took 3.8-4.2 and 7.4-8.1 ms so
# on the 2-core Xeon, against 5.0 and 9.3-9.8 through SciPy's OpenBLAS
# (0.3.30) on two threads, in processes of their own.  Alternated with
# OpenBLAS's threaded products in one process, the tiles had seemed level
# with it (7.5-7.8 ms against 7.7): its workers spin for a while after each
# call, on the core the tiles' second thread needs.  In a C loop, the
# blocked product with every tile stored to one place in L1 instead of C
# took 182 GFLOP/s against 161: C's tiles going to L2 and back between
# blocks of p cost that much, and starting each block's sums from zero and
# adding C after its last step (C prefetched first) gained under 3%, within
# the noise.  Blocks of p as long as the sum (see the large products
# above) are what took that cost away.
cdef extern from *:
    """
    #define TC_GEMM_MIN_ROWS 8
    """
    enum:
        TC_GEMM_MIN_ROWS    # rows of C (or of C^T) for a one-thread product in tiles


cdef inline bint _use_tiles(bint float32, BLAS_Trans trans_a, BLAS_Trans trans_b,
                            int m, int n, int k, double beta) noexcept nogil:
    """Whether :func:`_gemm` takes this product in tiles (else one BLAS call)."""
    if _use_small_gemm(float32, trans_a, trans_b, m, n, k):
        return True
    if not (float32 and TC_TILE_FMA) or k < 1 or (k > TC_GEMM_KMAX and beta != 0):
        return False
    if not (m >= TC_GEMM_MIN_ROWS and n >= TC_GEMM_WIDE
            or n >= TC_GEMM_MIN_ROWS and trans_a == Trans and m >= TC_GEMM_WIDE):
        return False        # (the shapes _small_gemm takes, as C or as C^T)
    return not _blas_may_use_threads()


cdef bint _gemm_tiles_fuse() noexcept nogil:
    """Whether float32 products past the crossover may take the tiles (with
    fused multiply-adds), as they do on one BLAS thread: :func:`_use_tiles`."""
    return TC_TILE_FMA


cdef bint _gemm_is_small(bint float32, BLAS_Trans trans_a, BLAS_Trans trans_b,
                         int m, int n, int k) noexcept nogil:
    """Whether :func:`_gemm` and :func:`_gemm_bias` take the small-product
    kernel for this product whatever the BLAS's thread count (else one BLAS
    call, or, on one BLAS thread, maybe tiles: :func:`_use_tiles`)."""
    return _use_small_gemm(float32, trans_a, trans_b, m, n, k)


# --- one threaded BLAS product at a time -------------------------------------
#
# OpenBLAS serialises its threaded GEMMs with a lock that is a static
# variable of the driver, and the driver is compiled once per transpose
# variant (NN, NT, TN, TT): four locks.  Two callers running different
# variants at once share the library's worker threads and buffers, and get
# wrong products without an error (OpenBLAS issue 5836, fixed upstream by one
# central lock in 2026; SciPy 1.17's 0.3.30 and NumPy 2.4's 0.3.31 both show
# it).  tinycore releases the GIL for a whole step, and a step uses three
# variants, so models trained at once in several Python threads meet it:
# four models on four BLAS threads, each trained in its own thread, 5 steps:
# 5 of 20 models ended different from the same training run alone, in 4 of
# 5 runs (a 2-core EPYC, SciPy's OpenBLAS 0.3.30).  So every BLAS product
# holds this module's lock while the library may split it across threads,
# as the upstream fix does.  On one BLAS thread the library runs each call in
# its caller's thread, and calls from several threads stay concurrent.  The
# count is asked of the library at each call (a function that reads a
# variable), so a limit set by any means (threadpoolctl, OPENBLAS_NUM_THREADS)
# is seen; a BLAS that cannot be asked (not OpenBLAS) is always serialised.
ctypedef int (*blas_thread_count_function)() noexcept nogil
ctypedef void (*blas_set_thread_count_function)(int count) noexcept nogil

# Names of OpenBLAS's thread count functions: SciPy's wheels prefix their
# symbols with scipy_, and 64-bit-integer builds add a suffix.
_THREAD_COUNT_SYMBOLS = ("scipy_openblas_get_num_threads", "openblas_get_num_threads",
                         "scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_")
_SET_THREAD_COUNT_SYMBOLS = tuple(name.replace("_get_", "_set_")
                                  for name in _THREAD_COUNT_SYMBOLS)

cdef PyThread_type_lock _blas_lock = NULL
cdef blas_thread_count_function _blas_thread_count = NULL
cdef blas_set_thread_count_function _blas_set_thread_count = NULL


def _find_blas_function(names):
    """The address of the first of ``names`` that the BLAS SciPy's cython_blas
    calls defines, or 0 if it has none of them.

    A symbol is looked up through cython_blas's own handle, which searches
    the libraries it was linked to: the BLAS this module's products run on.
    """
    from scipy.linalg import cython_blas
    try:
        library = ctypes.CDLL(cython_blas.__file__)
    except OSError:
        return 0
    for name in names:
        function = getattr(library, name, None)
        if function is not None:
            return ctypes.cast(function, ctypes.c_void_p).value
    return 0


def _find_blas_thread_count():
    """The address of the BLAS's thread-count function (OpenBLAS's
    ``openblas_get_num_threads``), or 0 if it has none."""
    return _find_blas_function(_THREAD_COUNT_SYMBOLS)


def _new_blas_lock():
    """Give this module a fresh, released lock (at import, and in the child
    of a fork: a lock held by a thread that the child does not have would
    never be released; the old one is left allocated for the same reason).
    A child forked while split steps held the BLAS to one thread (below)
    has none of their threads: it gets the count back."""
    global _blas_lock, tc_hold_count
    cdef PyThread_type_lock lock = PyThread_allocate_lock()
    if lock == NULL:
        raise MemoryError("could not allocate tinycore's BLAS lock")
    _blas_lock = lock
    if tc_hold_count > 0:
        tc_hold_count = 0
        _give_threads_back()


_new_blas_lock()
os.register_at_fork(after_in_child=_new_blas_lock)
_blas_thread_count = <blas_thread_count_function><size_t>_find_blas_thread_count()
if _blas_thread_count != NULL:
    _blas_set_thread_count = <blas_set_thread_count_function><size_t>_find_blas_function(
        _SET_THREAD_COUNT_SYMBOLS)


# OpenBLAS's GEMM keeps to one thread up to 4 * 65536 multiply-adds
# (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c);
# tinycore relies on a quarter of that (BLAS_ONE_THREAD_WORK, _blas.pxd).


cdef inline bint _blas_may_use_threads() noexcept nogil:
    """Whether the BLAS may split a product across threads (or cannot be asked)."""
    return _blas_thread_count == NULL or _blas_thread_count() > 1


# A split training step (_plan.pyx) runs each half of the batch on its own
# thread with one-thread BLAS products.  OpenBLAS's thread count is one
# variable for the whole process (no per-thread count in its pthreads
# builds), so the step holds it at 1 for its own length: the first of the
# steps holding it at once sets 1, the last gives the count back (setting
# it takes about 0.2 us).  No threaded product of tinycore's (which holds
# the BLAS lock) is under way meanwhile, and any that another thread begins
# sees the count of 1 and runs on its caller's thread (only slower).  A
# count set by other means during the steps (threadpoolctl in another
# thread) is overwritten when they end.
#
# _blas_threads() gives the count to come back while the BLAS is held, so
# that what a plan in another thread decides from it (how to split its
# step) does not change with this one's steps.  It reads without the lock
# (a threaded product holds that for milliseconds): the generation is odd
# while held, made odd before the count drops and even after it is back, so
# a reader that sees the same generation before and after its read saw a
# count of one state, and tries again otherwise.
cdef extern from *:
    """
    static int tc_hold_generation = 0;  /* odd while split steps hold the BLAS */
    static int tc_hold_count = 0;       /* how many (under the BLAS lock) */
    static int tc_held_threads = 0;     /* the count given back after */
    static inline int tc_load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void tc_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    """
    int tc_hold_generation
    int tc_hold_count
    int tc_held_threads
    int tc_load(int *p) nogil
    void tc_store(int *p, int v) nogil


cdef int _blas_threads() noexcept nogil:
    """The threads the BLAS may split a product across, or -1 if it cannot
    be asked (not OpenBLAS); while split steps hold it to one thread, the
    count it gets back after."""
    cdef int generation, count
    if _blas_thread_count == NULL:
        return -1
    while True:
        generation = tc_load(&tc_hold_generation)
        if generation & 1:
            count = tc_load(&tc_held_threads)
        else:
            count = _blas_thread_count()
        if tc_load(&tc_hold_generation) == generation:
            return count


cdef bint _blas_can_hold_one_thread() noexcept nogil:
    """Whether :func:`_blas_hold_one_thread` can set the BLAS's thread count."""
    return _blas_thread_count != NULL and _blas_set_thread_count != NULL


cdef void _blas_hold_one_thread() noexcept nogil:
    """Hold the BLAS to one thread until :func:`_blas_release_threads`.

    Requires :func:`_blas_can_hold_one_thread`.  Waits for a threaded
    product under way; products made meanwhile run on one thread (with a
    count of 1, :func:`_gemm` takes no lock).
    """
    global tc_hold_count
    PyThread_acquire_lock(_blas_lock, WAIT_LOCK)
    if tc_hold_count == 0:
        tc_store(&tc_held_threads, _blas_thread_count())
        tc_store(&tc_hold_generation, tc_load(&tc_hold_generation) + 1)    # odd
        _blas_set_thread_count(1)
    tc_hold_count += 1
    PyThread_release_lock(_blas_lock)


cdef void _blas_release_threads() noexcept nogil:
    """End a :func:`_blas_hold_one_thread`: the last one gives the BLAS
    its threads back."""
    global tc_hold_count
    PyThread_acquire_lock(_blas_lock, WAIT_LOCK)
    tc_hold_count -= 1
    if tc_hold_count == 0:
        _give_threads_back()
    PyThread_release_lock(_blas_lock)


cdef void _give_threads_back() noexcept nogil:
    # The count from before the holds, then the generation even again.
    _blas_set_thread_count(tc_load(&tc_held_threads))
    tc_store(&tc_hold_generation, tc_load(&tc_hold_generation) + 1)


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
    Small products take :func:`_small_gemm` (and, on one BLAS thread, larger
    ones: :func:`_use_tiles`), the others one BLAS call (under the BLAS lock
    while the library may use several threads).
    """
    cdef char ta = <char>trans_a
    cdef char tb = <char>trans_b
    cdef float alpha_f = <float>alpha
    cdef float beta_f = <float>beta
    if _use_tiles(floating is float, trans_a, trans_b, m, n, k, beta):
        _small_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    # OpenBLAS runs a product this small on the calling thread whatever its
    # thread count, so such calls from several threads never meet (the
    # split training step makes them from two threads at once).
    cdef bint serialise = (<long long>m * n * k > BLAS_ONE_THREAD_WORK
                           and _blas_may_use_threads())
    if serialise:
        PyThread_acquire_lock(_blas_lock, WAIT_LOCK)
    # The Fortran interface takes non-const pointers but does not write A or B.
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha_f, <float *>b, &ldb,
              <float *>a, &lda, &beta_f, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb,
              <double *>a, &lda, &beta, c, &ldc)
    if serialise:
        PyThread_release_lock(_blas_lock)


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
    if (bias != NULL and not (n < TC_GEMM_WIDE <= m)
            and _use_tiles(floating is float, NoTrans, NoTrans, m, n, k, 0.0)):
        _tiled_gemm(m, n, k, 1.0, a, lda, 1, b, ldb, 1, 0.0, bias, c, ldc, 1)
        return
    _gemm(NoTrans, NoTrans, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)
    if bias != NULL:
        for i in range(m):
            c_row = c + i * ldc
            for j in range(n):
                c_row[j] = c_row[j] + bias[j]


cdef enum:
    _COLUMN_SUM_STRIPS = 512    # narrower than this: strips of 16 columns
    _COLUMN_SUM_BLOCK = 2048    # wider: blocks of this many columns, row by row


cdef void _column_sums(const floating *x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       floating *out) noexcept nogil:
    """out[j] = sum_i x[i, j] (x row-major, n_rows x n_cols): the bias gradient.

    Each sum starts from +0 and takes the rows in increasing order, so it is
    the same on every run and in every build, whichever of the two ways
    below takes it.  A narrow x goes in strips of 16 columns, each strip
    down all the rows, its sums in a local array that the compiler holds in
    registers (summed in ``out`` itself they went back to memory after
    every row, since ``out`` might have been part of ``x``).  A wide one
    goes row by row, in blocks of up to _COLUMN_SUM_BLOCK columns, the
    block's sums in ``out`` (in L1): each row's part of a block is read in
    order, a stream the prefetchers follow.  In strips, a 2048-wide dZ was
    read 64 bytes a row, each row 8 KB from the last: a new page at every
    step, which no prefetcher follows.  On a 2-core Xeon (family 6, model
    167), float32, the same x again and again, median us in strips and by
    rows: 256 x 2048 72-82 and 42-45, 256 x 1024 21-22 and 14-16; from 512
    columns down, level, but for 64 x 32 (0.58 and 0.71 before the strips
    were kept for it).  T4's two 256 x 2048 dZ took 314 us of its step in
    strips, 148-152 by rows.
    """
    if n_cols < _COLUMN_SUM_STRIPS:
        _column_sums_in_strips(x, n_rows, n_cols, out)
    else:
        _column_sums_by_rows(x, n_rows, n_cols, out)


cdef inline void _column_sums_in_strips(const floating *x, Py_ssize_t n_rows,
                                        Py_ssize_t n_cols, floating *out) noexcept nogil:
    cdef floating acc[16]
    cdef Py_ssize_t i, j, start = 0, width
    cdef const floating *row
    while start + 16 <= n_cols:
        for j in range(16):
            acc[j] = 0
        for i in range(n_rows):
            row = x + i * n_cols + start
            for j in range(16):
                acc[j] = acc[j] + row[j]
        for j in range(16):
            out[start + j] = acc[j]
        start += 16
    width = n_cols - start
    if width > 0:
        _sum_rows(x, n_rows, n_cols, start, width, acc)
        for j in range(width):
            out[start + j] = acc[j]


cdef inline void _column_sums_by_rows(const floating *x, Py_ssize_t n_rows,
                                      Py_ssize_t n_cols, floating *out) noexcept nogil:
    cdef Py_ssize_t start = 0, width
    while start < n_cols:
        width = min(<Py_ssize_t>_COLUMN_SUM_BLOCK, n_cols - start)
        _sum_rows(x, n_rows, n_cols, start, width, out + start)
        start += width


cdef inline void _sum_rows(const floating *x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                           Py_ssize_t start, Py_ssize_t width, floating *sums) noexcept nogil:
    # sums[j] = sum_i x[i, start + j] for j < width, from +0, rows in order.
    cdef Py_ssize_t i, j
    cdef const floating *row
    for j in range(width):
        sums[j] = 0
    for i in range(n_rows):
        row = x + i * n_cols + start
        for j in range(width):
            sums[j] = sums[j] + row[j]


cpdef void _column_sums_memview(const floating[:, ::1] x,   # IN  (n_rows, n_cols)
                                floating[::1] out):         # OUT (n_cols,)
    """Test hook: ``out = x.sum(axis=0)``, rows in order, through :func:`_column_sums`."""
    with nogil:
        _column_sums(&x[0, 0], x.shape[0], x.shape[1], &out[0])


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
    larger than the row), but each row must be contiguous.  Requires k >= 1,
    and beta = 0 if k > TC_GEMM_KMAX; shapes are otherwise not checked.
    """
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t size = sizeof(floating)
    if k < 1 or (k > TC_GEMM_KMAX and beta != 0):
        raise ValueError(f"k = {k}: the kernel takes k >= 1, and beta = 0 past {TC_GEMM_KMAX}")
    if ((a.shape[1] > 1 and a.strides[1] != size) or (b.shape[1] > 1 and b.strides[1] != size)
            or (c.shape[1] > 1 and c.strides[1] != size)):
        raise ValueError("rows must be contiguous")
    with nogil:
        _small_gemm(Trans if trans_a else NoTrans, Trans if trans_b else NoTrans,
                    m, n, k, alpha, &a[0, 0], <int>(a.strides[0] // size),
                    &b[0, 0], <int>(b.strides[0] // size),
                    beta, &c[0, 0], <int>(c.strides[0] // size))


def _gemm_uses_kernel(bint float32, bint trans_a, bint trans_b, int m, int n, int k,
                      double beta=0.0):
    """Test hook: whether :func:`_gemm` takes the small-product kernel (else
    BLAS), at the BLAS's thread count now."""
    return _use_tiles(float32, Trans if trans_a else NoTrans,
                      Trans if trans_b else NoTrans, m, n, k, beta)


def _simd_level():
    """The TINYCORE_SIMD_LEVEL this module was compiled for (1, 3 or 4)."""
    return TINYCORE_SIMD_LEVEL


def _blocked_work():
    """Test hook: the multiply-adds from which the tiles pack B a block of
    panels at a time and take C's rows in blocks (TC_GEMM_BLOCKED_WORK)."""
    return TC_GEMM_BLOCKED_WORK


def _blocked_kc():
    """Test hook: the longest block of p of a blocked product whose A is read
    in place (TC_GEMM_KC; a packed A keeps to TC_GEMM_KMAX)."""
    return TC_GEMM_KC


def _tile_fuses():
    """Test hook: whether the small-product kernel fuses each multiply-add
    (one rounding, FMA) or rounds the product and then the sum."""
    return bool(TC_TILE_FMA)


def _blas_calls_serialised():
    """Test hook: whether a BLAS product would now wait for the BLAS lock."""
    return bool(_blas_may_use_threads())


def _acquire_blas_lock():
    """Test hook: take the BLAS lock (BLAS products from other threads wait)."""
    with nogil:
        PyThread_acquire_lock(_blas_lock, WAIT_LOCK)


def _release_blas_lock():
    """Test hook: release the BLAS lock taken by :func:`_acquire_blas_lock`."""
    PyThread_release_lock(_blas_lock)
