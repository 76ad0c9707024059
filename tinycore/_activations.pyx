"""Activation functions and their derivatives, for float32 and float64.

Scalar formulas live in ``cdef inline`` functions; the loops over arrays call
them.  The loops used by the dense layer (:func:`_bias_activation`,
:func:`_activation_backward`) take raw pointers so other kernels can call them
without the GIL; the ``def`` functions at the bottom are what
``tinycore.activations`` calls after it has validated its input.
"""
from libc.math cimport fabs, tanh
from cython cimport floating


# The widest vector instructions this module was compiled for, from the
# compiler's own macros (setup.py decides the flags; tinycore._simd reports it).
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define TINYCORE_VECTOR_ISA "AVX-512"
    #elif defined(__AVX2__)
    #define TINYCORE_VECTOR_ISA "AVX2"
    #elif defined(__AVX__)
    #define TINYCORE_VECTOR_ISA "AVX"
    #elif defined(__SSE2__) || defined(_M_X64)
    #define TINYCORE_VECTOR_ISA "SSE2"
    #elif defined(__ARM_NEON)
    #define TINYCORE_VECTOR_ISA "NEON"
    #else
    #define TINYCORE_VECTOR_ISA "the compiler's default"
    #endif
    """
    const char *TINYCORE_VECTOR_ISA

#: The vector instruction set the loops of this build use.
VECTOR_ISA = TINYCORE_VECTOR_ISA.decode("ascii")


# ---------------------------------------------------------------------------
# Scalar formulas
# ---------------------------------------------------------------------------

cdef inline floating _sigmoid(floating z) noexcept nogil:
    # exp() only ever sees -|z| <= 0: it can underflow to 0 (harmless) but
    # never overflow to inf, so the formula is stable for any finite z:
    # sigmoid(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) for z < 0.
    cdef floating e = _exp(<floating>-fabs(z))
    cdef floating s = <floating>1 / (<floating>1 + e)
    cdef floating es = e * s
    # Both sides computed first: a select of two values, not a branch over
    # arithmetic, is what the compiler may vectorise (-ftrapping-math).
    return s if z >= 0 else es


cdef inline float _tanhf(float z) noexcept nogil:
    """tanh(z) in float32 within 3 ulp, in straight-line code that vectorises.

    For |z| < 0.625, z P(z^2) with P of degree 5 fitted to tanh(z)/z (relative
    error 1e-7 in float32); beyond, (1 - e) / (1 + e) with e = exp(-2|z|),
    which no longer cancels there.  Both are computed and one is selected.
    """
    cdef float x = <float>fabs(z)
    cdef float t = x * x
    cdef float small = x * (<float>0.9999999982362168 + t * (<float>-0.333332753485475
                            + t * (<float>0.13331365589065725 + t * (<float>-0.05373586513949111
                            + t * (<float>0.02063030700740345 + t * <float>-0.005697522351641612)))))
    cdef float e = _expf(<float>-2.0 * x)
    cdef float large = (<float>1.0 - e) / (<float>1.0 + e)
    cdef float magnitude = small if x < <float>0.625 else large
    return magnitude if z >= 0 else -magnitude


cdef inline floating _tanh(floating z) noexcept nogil:
    if floating is float:
        return _tanhf(z)
    else:
        return tanh(z)


# The activations whose arithmetic costs less than moving their data.  Each
# side of a select is computed first: a select of two values, not a branch
# over arithmetic, is what the compiler may vectorise.

cdef inline floating _relu(floating z) noexcept nogil:
    return z if z > 0 else 0


cdef inline floating _relu_grad(floating z) noexcept nogil:
    return 1 if z > 0 else 0                # 0 at z == 0, by convention


cdef inline floating _leaky_relu(floating z, floating slope) noexcept nogil:
    cdef floating scaled = slope * z
    return z if z > 0 else scaled


cdef inline floating _leaky_relu_grad(floating z, floating slope) noexcept nogil:
    return 1 if z > 0 else slope            # alpha at z == 0


cdef inline floating _step(floating z) noexcept nogil:
    return 1 if z >= 0 else 0


cdef inline bint _not_finite(floating z) noexcept nogil:
    # z - z is 0 for finite z and NaN for inf or NaN.  In a loop bound by
    # memory the comparison costs nothing (unlike in a pass of its own: see
    # _all_finite).
    return not (z - z == 0)


# ---------------------------------------------------------------------------
# Row loops (pointer level, no Python objects)
# ---------------------------------------------------------------------------

cdef inline void _softmax_row_backward(const floating *a, const floating *da,
                                       floating *dz, Py_ssize_t n) noexcept nogil:
    # Jacobian-vector product of softmax: J = diag(a) - a a^T, so
    # dz_j = a_j * (da_j - sum_k da_k a_k).  dz may alias da.
    cdef Py_ssize_t j
    cdef double dot = 0.0
    for j in range(n):
        dot += da[j] * a[j]
    for j in range(n):
        dz[j] = <floating>(a[j] * (da[j] - dot))


cdef void _apply(Activation act, double alpha, const floating *z, floating *a,
                 Py_ssize_t n) noexcept nogil:
    """a = act(z) elementwise (not softmax); a may be z.

    One loop per activation, chosen once: a loop without branches on the
    activation is one the compiler can vectorise.
    """
    cdef Py_ssize_t i
    cdef floating slope = <floating>alpha
    if act == SIGMOID:
        for i in range(n):
            a[i] = _sigmoid(z[i])
    elif act == TANH:
        for i in range(n):
            a[i] = _tanh(z[i])
    elif act == RELU:
        for i in range(n):
            a[i] = _relu(z[i])
    elif act == LEAKY_RELU:
        for i in range(n):
            a[i] = _leaky_relu(z[i], slope)
    elif act == STEP:
        for i in range(n):
            a[i] = _step(z[i])
    elif a != z:          # LINEAR
        for i in range(n):
            a[i] = z[i]


cdef void _derivative(Activation act, double alpha, const floating *z, floating *out,
                      Py_ssize_t n) noexcept nogil:
    """out = act'(z) elementwise, from the input z (not softmax): one loop each."""
    cdef Py_ssize_t i
    cdef floating slope = <floating>alpha
    cdef floating s
    if act == SIGMOID:
        for i in range(n):
            s = _sigmoid(z[i])
            out[i] = s * (<floating>1 - s)
    elif act == TANH:
        for i in range(n):
            s = _tanh(z[i])
            out[i] = <floating>1 - s * s
    elif act == RELU:
        for i in range(n):
            out[i] = _relu_grad(z[i])
    elif act == LEAKY_RELU:
        for i in range(n):
            out[i] = _leaky_relu_grad(z[i], slope)
    elif act == STEP:
        for i in range(n):
            out[i] = 0                            # flat everywhere: nothing to learn from
    else:         # LINEAR
        for i in range(n):
            out[i] = 1


cdef void _bias_activation(Activation act, double alpha, floating *z,
                           const floating *bias, floating *a,
                           Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    """z += bias (per column; skipped when bias is NULL), then a = act(z).

    In chunks of rows of about 1024 elements: each chunk is still in cache
    when the activation reads it (one pass over memory), and the vectorised
    activation loop runs over the whole chunk rather than row by row (a
    32-wide row is too short a loop to pay for its set-up).  ``a`` may be
    the same buffer as ``z``.
    """
    cdef Py_ssize_t i, j, start = 0, stop
    cdef Py_ssize_t chunk_rows = max(1, 1024 // n_cols)
    cdef floating *z_row
    while start < n_rows:
        stop = min(start + chunk_rows, n_rows)
        if bias != NULL:
            for i in range(start, stop):
                z_row = z + i * n_cols
                for j in range(n_cols):
                    z_row[j] = z_row[j] + bias[j]
        if act == SOFTMAX:
            _softmax_rows(z + start * n_cols, a + start * n_cols, stop - start,
                          n_cols, True, NULL)
        else:
            _apply(act, alpha, z + start * n_cols, a + start * n_cols,
                   (stop - start) * n_cols)
        start = stop


cdef void _activation_backward(Activation act, double alpha, const floating *a,
                               const floating *da, floating *dz,
                               Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    """dz = dL/dz from the layer output a and the upstream gradient da = dL/da.

    The chain rule, one element (or, for softmax, one row) at a time, with
    f'(z) taken from the output a = f(z), so no exp() is recomputed:
    sigmoid' = a(1 - a) <= 0.25 and tanh' = 1 - a^2 <= 1 are both near 0 once
    the unit saturates; multiplied layer after layer, they are the source of
    the vanishing-gradient problem.  For ReLU and leaky ReLU (alpha >= 0),
    a > 0 exactly when z > 0, so the output tells the side of the kink.
    ``dz`` may be the same buffer as ``da``.
    """
    cdef Py_ssize_t i, n = n_rows * n_cols
    cdef floating slope = <floating>alpha
    cdef floating scaled
    if act == SOFTMAX:
        for i in range(n_rows):
            _softmax_row_backward(a + i * n_cols, da + i * n_cols,
                                  dz + i * n_cols, n_cols)
    elif act == SIGMOID:
        for i in range(n):
            dz[i] = da[i] * (a[i] * (<floating>1 - a[i]))
    elif act == TANH:
        for i in range(n):
            dz[i] = da[i] * (<floating>1 - a[i] * a[i])
    elif act == RELU:
        for i in range(n):
            dz[i] = da[i] if a[i] > 0 else 0
    elif act == LEAKY_RELU:
        for i in range(n):
            scaled = slope * da[i]
            dz[i] = da[i] if a[i] > 0 else scaled
    elif act == STEP:
        for i in range(n):
            dz[i] = 0
    elif dz != da:        # LINEAR
        for i in range(n):
            dz[i] = da[i]


# ---------------------------------------------------------------------------
# Array entry points (called by tinycore.activations after validation)
# ---------------------------------------------------------------------------

# Elements per chunk of the value and derivative entry points: the kernel
# writes a chunk, then checks that its input was finite while the chunk is
# still in the L1 cache, so the check costs no second pass over memory.
cdef enum:
    CHUNK = 2048


cdef bint _cheap_checked(bint derivative, Activation act, floating slope,
                         const floating *z, floating *out, Py_ssize_t n) noexcept nogil:
    """out = act(z), or act'(z) with ``derivative``, for linear, ReLU, leaky
    ReLU and step, checking z in the same loop; whether z was all finite.

    These loops are bound by memory: reading a chunk again from L1 to check
    it cost a quarter of their time (256 x 1024 float32 on one Zen 4 core,
    in a C loop: 27-29 us against 21.5 us checked in the same loop, which
    is memcpy's time).
    """
    cdef Py_ssize_t i
    cdef floating x
    cdef int bad = 0
    if act == RELU and derivative:
        for i in range(n):
            x = z[i]
            out[i] = _relu_grad(x)
            bad |= _not_finite(x)
    elif act == RELU:
        for i in range(n):
            x = z[i]
            out[i] = _relu(x)
            bad |= _not_finite(x)
    elif act == LEAKY_RELU and derivative:
        for i in range(n):
            x = z[i]
            out[i] = _leaky_relu_grad(x, slope)
            bad |= _not_finite(x)
    elif act == LEAKY_RELU:
        for i in range(n):
            x = z[i]
            out[i] = _leaky_relu(x, slope)
            bad |= _not_finite(x)
    elif act == STEP and not derivative:
        for i in range(n):
            x = z[i]
            out[i] = _step(x)
            bad |= _not_finite(x)
    elif act == STEP:           # its derivative: 0 whatever z
        for i in range(n):
            out[i] = 0
            bad |= _not_finite(z[i])
    elif derivative:            # LINEAR's: 1 whatever z
        for i in range(n):
            out[i] = 1
            bad |= _not_finite(z[i])
    else:                       # LINEAR
        for i in range(n):
            x = z[i]
            out[i] = x
            bad |= _not_finite(x)
    return not bad


cdef bint _elementwise_checked(bint derivative, Activation act, double alpha,
                               const floating *z, floating *out,
                               Py_ssize_t n) noexcept nogil:
    """out = act(z), or act'(z) with ``derivative``; sigmoid and tanh a chunk
    at a time (see CHUNK), the others in one checked loop.

    Returns whether every element of z was finite (if not, out holds garbage).
    """
    cdef Py_ssize_t start = 0, size
    cdef bint finite = True
    if act != SIGMOID and act != TANH:
        return _cheap_checked(derivative, act, <floating>alpha, z, out, n)
    while start < n:
        size = min(<Py_ssize_t>CHUNK, n - start)
        if derivative:
            _derivative(act, alpha, z + start, out + start, size)
        else:
            _apply(act, alpha, z + start, out + start, size)
        finite &= _all_finite(z + start, size)
        start += size
    return finite


def activation_value(Activation act, double alpha,
                     const floating[:, ::1] z,     # IN  (n_rows, n_cols)
                     floating[:, ::1] out):        # OUT same shape
    """out = act(z); softmax is taken row by row.

    Returns whether every element of z was finite (if not, out holds garbage).
    """
    cdef Py_ssize_t n_rows = z.shape[0], n_cols = z.shape[1]
    cdef bint finite = True
    if n_rows == 0 or n_cols == 0:
        return True
    with nogil:
        if act == SOFTMAX:
            # Checked first: out may be z.
            finite = _all_finite(&z[0, 0], n_rows * n_cols)
            _softmax_rows(&z[0, 0], &out[0, 0], n_rows, n_cols, True, NULL)
        else:
            finite = _elementwise_checked(False, act, alpha, &z[0, 0], &out[0, 0],
                                          n_rows * n_cols)
    return finite


def activation_derivative(Activation act, double alpha,
                          const floating[:, ::1] z,     # IN  (n_rows, n_cols)
                          floating[:, ::1] out):        # OUT same shape
    """out = act'(z), elementwise (not defined for softmax).

    Returns whether every element of z was finite (if not, out holds garbage).
    """
    cdef bint finite
    if z.shape[0] == 0 or z.shape[1] == 0:
        return True
    with nogil:
        finite = _elementwise_checked(True, act, alpha, &z[0, 0], &out[0, 0],
                                      z.shape[0] * z.shape[1])
    return finite


def activation_backward(Activation act, double alpha,
                        const floating[:, ::1] a,     # IN  layer output (n_rows, n_cols)
                        const floating[:, ::1] da,    # IN  dL/da, same shape
                        floating[:, ::1] dz):         # OUT dL/dz, same shape
    """dz = dL/dz given the output a = act(z) and the upstream gradient da."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        return
    with nogil:
        _activation_backward(act, alpha, &a[0, 0], &da[0, 0], &dz[0, 0],
                             a.shape[0], a.shape[1])
