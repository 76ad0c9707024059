# Activation kernels shared with _dense (and, later, the fused training plan).
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
