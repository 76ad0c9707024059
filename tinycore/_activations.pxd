# Activation kernels shared with _dense, _losses and the fused training plan.
from libc.math cimport exp, log
from libc.stdint cimport uint32_t, uint64_t
from cython cimport floating

# The codes match ``tinycore.activations.CODES``; keep the two in step.
cpdef enum Activation:
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    STEP = 5
    SOFTMAX = 6

cdef void _bias_activation(Activation act, double alpha, floating *z,
                           const floating *bias, floating *a,
                           Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil

cdef void _activation_backward(Activation act, double alpha, const floating *a,
                               const floating *da, floating *dz,
                               Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil


# --- exp, inline here so that _losses shares the vectorisable float32 one ---

cdef union _FloatBits:
    float value
    uint32_t bits


cdef inline float _expf(float x) noexcept nogil:
    """exp(x) for x <= 0 (or NaN) in float32, within 1.4 ulp, in straight-line
    code that vectorises.  Every caller passes x <= 0: -|z|, -2|z|, z - max(z).

    exp(x) = 2^n exp(r) with n = round(x / ln 2) and |r| <= ln(2) / 2: r by
    Cody and Waite's two-part reduction, exp(r) by a polynomial of degree 6
    fitted to it in relative error (Lawson's minimax iteration; 1.9e-9), 2^n
    written into the exponent bits.  Checked against float64 exp for every
    float32 in [-87, 0]: at most 1.31 ulp (the Taylor polynomial of degree 7
    it replaced: 1.21 ulp, one multiply-add more).  libm's expf is a call per
    element that the compiler cannot vectorise.
    """
    # n comes from the argument clamped to -87, where 2^n is still a normal
    # float; r from x itself, so that a NaN reaches the result.
    cdef float clamped = x if x > <float>-87.0 else <float>-87.0
    cdef float n, r, r2, high, poly
    cdef _FloatBits shifted, scale
    # Adding 1.5 * 2^23 rounds to the nearest integer, which then sits in the
    # low bits of the sum's representation; every constant is a float so that
    # this happens in float32 arithmetic (and it relies on strict IEEE
    # arithmetic: never build with -ffast-math).
    shifted.value = clamped * <float>1.44269504088896341 + <float>12582912.0
    n = shifted.value - <float>12582912.0
    r = x - n * <float>0.693359375 + n * <float>2.12194440e-4
    # 1 + r (1 + r (c2 + c3 r + r^2 (c4 + c5 r + c6 r^2))): the terms of
    # degree 2 and up in pairs (Estrin's scheme) and the first two by Horner's
    # rule, which keeps Horner's accuracy (the same 1.31 ulp) with a chain of
    # 9 dependent operations instead of 12; a loop of sigmoids waits on that
    # chain more than on the arithmetic.
    r2 = r * r
    high = (<float>0.04166822507977486 + <float>0.008374815806746483 * r
            + r2 * <float>0.0013836845755577087)
    poly = <float>0.49999991059303284 + <float>0.16666419804096222 * r + r2 * high
    poly = <float>1.0 + r * (<float>1.0 + r * poly)
    # The sum's bits are 0x4B400000 + n; shifted left by 23 the constant part
    # leaves the word, and n << 23 plus the bias 127 << 23 is 2^n.
    scale.bits = (shifted.bits << 23) + <uint32_t>0x3F800000
    poly = poly * scale.value
    # A select, not a branch, keeps the loop vectorisable.  Below -87 the
    # result is flushed to 0 (float32's normal range ends at exp(-87.3)).
    return <float>0.0 if x < <float>-87.0 else poly


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return _expf(x)
    else:
        return exp(x)



cdef inline floating _row_max(const floating *z, Py_ssize_t n) noexcept nogil:
    # The maximum of n >= 1 values, in eight interleaved lanes: one running
    # maximum is a chain the compiler may not reorder (and waits 3 cycles per
    # element); eight vectorise.  A maximum is exact in any order.
    cdef floating lane[8]
    cdef floating m
    cdef Py_ssize_t i, j, n8 = n - n % 8
    if n < 8:
        m = z[0]
        for j in range(1, n):
            m = z[j] if z[j] > m else m
        return m
    for j in range(8):
        lane[j] = z[j]
    for i in range(8, n8, 8):
        for j in range(8):
            lane[j] = z[i + j] if z[i + j] > lane[j] else lane[j]
    for i in range(n8, n):
        lane[0] = z[i] if z[i] > lane[0] else lane[0]
    m = lane[0]
    for j in range(1, 8):
        m = lane[j] if lane[j] > m else m
    return m


cdef inline double _sum_in_lanes(const floating *x, Py_ssize_t n) noexcept nogil:
    # sum_j x[j] in double, as eight partial sums (lane j takes x[j], x[j + 8],
    # ...) added in a fixed tree: one running sum is a chain that waits on
    # each addition, eight vectorise.  The order is fixed by this code, so
    # every build gives the same bits.
    cdef double lane[8]
    cdef Py_ssize_t i, j, n8 = n - n % 8
    for j in range(8):
        lane[j] = 0.0
    for i in range(0, n8, 8):
        for j in range(8):
            lane[j] += x[i + j]
    for i in range(n8, n):
        lane[0] += x[i]
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))


# Rows of a softmax whose exps are taken in one loop, their maxima kept on
# the stack.  Taken a row at a time, a row of 10 classes runs most of its
# exps in the scalar remainder of a 16-lane vector loop; 32 rows of 10 are
# 20 full vectors.
cdef enum:
    _SOFTMAX_BLOCK_ROWS = 32


cdef inline void _softmax_rows(const floating *z, floating *out,
                               Py_ssize_t n_rows, Py_ssize_t n_cols,
                               bint normalise, double *log_sum_exp) noexcept nogil:
    """For each of n_rows contiguous rows of n_cols >= 1: out = exp(z - m),
    m the row's maximum; with ``normalise`` divided by the row's sum, which
    makes out the row's softmax.  Unless ``log_sum_exp`` is NULL, it gets
    each row's m + log(sum), its log-sum-exp (n_rows values).

    Subtracting the maximum first (the log-sum-exp trick) makes every
    exponent <= 0, so exp() cannot overflow even for logits of 1e4; softmax
    and the cross-entropy value share the exps.  Each element's arithmetic
    does not depend on how the rows are blocked, so neither do the bits.
    out may be z itself.
    """
    cdef floating row_max[_SOFTMAX_BLOCK_ROWS]
    cdef Py_ssize_t start, rows, i, j
    cdef floating m, inverse
    cdef floating *row
    cdef double total
    start = 0
    while start < n_rows:       # (range() without the GIL takes only a literal step)
        rows = min(<Py_ssize_t>_SOFTMAX_BLOCK_ROWS, n_rows - start)
        for i in range(rows):
            row = out + (start + i) * n_cols
            m = _row_max(z + (start + i) * n_cols, n_cols)
            row_max[i] = m
            for j in range(n_cols):
                row[j] = z[(start + i) * n_cols + j] - m
        row = out + start * n_cols
        for j in range(rows * n_cols):
            row[j] = _exp(row[j])
        for i in range(rows):
            row = out + (start + i) * n_cols
            total = _sum_in_lanes(row, n_cols)
            if normalise:
                inverse = <floating>(1.0 / total)
                for j in range(n_cols):
                    row[j] = row[j] * inverse
            if log_sum_exp != NULL:
                log_sum_exp[start + i] = row_max[i] + log(total)
        start += rows


# --- the finiteness check of the input, inline so that every kernel module
# can make it inside the pass that already reads the data ---

cdef union _DoubleBits:
    double value
    uint64_t bits


cdef inline bint _all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    # x - x is +0, all bits clear, for finite x, and NaN for inf or NaN: the
    # OR of the bits of every difference is 0 only if all were finite.  Two
    # vector operations per vector of input and no branch (a comparison and
    # a mask per element took twice as long, as long as a ReLU pass).
    cdef Py_ssize_t i
    cdef _FloatBits single
    cdef _DoubleBits double_
    cdef uint32_t bits32 = 0
    cdef uint64_t bits64 = 0
    if floating is float:
        for i in range(n):
            single.value = x[i] - x[i]
            bits32 |= single.bits
        return bits32 == 0
    else:
        for i in range(n):
            double_.value = x[i] - x[i]
            bits64 |= double_.bits
        return bits64 == 0
