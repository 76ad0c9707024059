"""Activation functions and their derivatives, for float32 and float64.

Scalar formulas live in ``cdef inline`` functions; the loops over arrays call
them.  The loops used by the dense layer (:func:`_bias_activation`,
:func:`_activation_backward`) take raw pointers so other kernels can call them
without the GIL; the ``def`` functions at the bottom are what
``tinycore.activations`` calls after it has validated its input.
"""
from libc.math cimport exp, tanh
from cython cimport floating


# ---------------------------------------------------------------------------
# Scalar formulas
# ---------------------------------------------------------------------------

cdef inline double _sigmoid(double z) noexcept nogil:
    # Branch on the sign so that exp() only sees non-positive arguments: it can
    # then underflow to 0 (harmless) but never overflow to inf.
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef inline double _value(Activation act, double alpha, double z) noexcept nogil:
    """Elementwise activation value at z (softmax is row-wise, not here)."""
    if act == SIGMOID:
        return _sigmoid(z)
    if act == TANH:
        return tanh(z)
    if act == RELU:
        return z if z > 0 else 0.0
    if act == LEAKY_RELU:
        return z if z > 0 else alpha * z
    if act == STEP:
        return 1.0 if z >= 0 else 0.0
    return z    # LINEAR


cdef inline double _derivative_at_input(Activation act, double alpha,
                                        double z) noexcept nogil:
    """f'(z), from the input z."""
    cdef double s
    if act == SIGMOID:
        s = _sigmoid(z)
        return s * (1.0 - s)
    if act == TANH:
        s = tanh(z)
        return 1.0 - s * s
    if act == RELU:
        return 1.0 if z > 0 else 0.0          # 0 at z == 0, by convention
    if act == LEAKY_RELU:
        return 1.0 if z > 0 else alpha        # alpha at z == 0
    if act == STEP:
        return 0.0                            # flat everywhere: nothing to learn from
    return 1.0    # LINEAR


cdef inline double _derivative_at_output(Activation act, double alpha,
                                         double a) noexcept nogil:
    """f'(z), from the output a = f(z): backprop needs no second exp().

    sigmoid' = a(1 - a) <= 0.25 and tanh' = 1 - a^2 <= 1 are both near 0 once
    the unit saturates; multiplied layer after layer, they are the source of
    the vanishing-gradient problem.  For ReLU and leaky ReLU (alpha >= 0),
    a > 0 exactly when z > 0, so the output tells the side of the kink.
    """
    if act == SIGMOID:
        return a * (1.0 - a)
    if act == TANH:
        return 1.0 - a * a
    if act == RELU:
        return 1.0 if a > 0 else 0.0
    if act == LEAKY_RELU:
        return 1.0 if a > 0 else alpha
    if act == STEP:
        return 0.0
    return 1.0    # LINEAR


# ---------------------------------------------------------------------------
# Row loops (pointer level, no Python objects)
# ---------------------------------------------------------------------------

cdef inline void _softmax_row(const floating *z, floating *a,
                              Py_ssize_t n) noexcept nogil:
    # Subtract the row maximum first (the log-sum-exp trick): every exponent
    # is then <= 0, so exp() cannot overflow even for logits of 1e4.
    cdef Py_ssize_t j
    cdef double row_max = z[0]
    cdef double total = 0.0
    cdef double e
    for j in range(1, n):
        if z[j] > row_max:
            row_max = z[j]
    for j in range(n):
        e = exp(z[j] - row_max)
        a[j] = <floating>e
        total += e
    for j in range(n):
        a[j] = <floating>(a[j] / total)


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


cdef void _bias_activation(Activation act, double alpha, floating *z,
                           const floating *bias, floating *a,
                           Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    """z += bias (per column; skipped when bias is NULL), then a = act(z).

    One pass over z.  ``a`` may be the same buffer as ``z`` (linear layers).
    """
    cdef Py_ssize_t i, j
    cdef floating *z_row
    cdef floating *a_row
    for i in range(n_rows):
        z_row = z + i * n_cols
        a_row = a + i * n_cols
        if bias != NULL:
            for j in range(n_cols):
                z_row[j] = z_row[j] + bias[j]
        if act == SOFTMAX:
            _softmax_row(z_row, a_row, n_cols)
        else:
            for j in range(n_cols):
                a_row[j] = <floating>_value(act, alpha, z_row[j])


cdef void _activation_backward(Activation act, double alpha, const floating *a,
                               const floating *da, floating *dz,
                               Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    """dz = dL/dz from the layer output a and the upstream gradient da = dL/da.

    The chain rule, one element (or, for softmax, one row) at a time.
    ``dz`` may be the same buffer as ``da``.
    """
    cdef Py_ssize_t i, size = n_rows * n_cols
    if act == SOFTMAX:
        for i in range(n_rows):
            _softmax_row_backward(a + i * n_cols, da + i * n_cols,
                                  dz + i * n_cols, n_cols)
        return
    for i in range(size):
        dz[i] = <floating>(da[i] * _derivative_at_output(act, alpha, a[i]))


# ---------------------------------------------------------------------------
# Array entry points (called by tinycore.activations after validation)
# ---------------------------------------------------------------------------

def activation_value(Activation act, double alpha,
                     const floating[:, ::1] z,     # IN  (n_rows, n_cols)
                     floating[:, ::1] out):        # OUT same shape
    """out = act(z); softmax is taken row by row."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t n_rows = z.shape[0], n_cols = z.shape[1]
    if n_rows == 0 or n_cols == 0:
        return
    with nogil:
        if act == SOFTMAX:
            for i in range(n_rows):
                _softmax_row(&z[i, 0], &out[i, 0], n_cols)
        else:
            for i in range(n_rows):
                for j in range(n_cols):
                    out[i, j] = <floating>_value(act, alpha, z[i, j])


def activation_derivative(Activation act, double alpha,
                          const floating[:, ::1] z,     # IN  (n_rows, n_cols)
                          floating[:, ::1] out):        # OUT same shape
    """out = act'(z), elementwise (not defined for softmax)."""
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                out[i, j] = <floating>_derivative_at_input(act, alpha, z[i, j])


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
