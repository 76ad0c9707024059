"""In-place parameter update kernels.

Each optimizer step is one call over the model's flat parameter buffer and its
gradient buffer (and, for stateful optimizers, state buffers of the same size).
"""
from cython cimport floating


cdef void _sgd_update(double lr, floating *param, const floating *grad,
                      Py_ssize_t n) noexcept nogil:
    # In the parameters' own precision, as PyTorch does: w -= lr * g.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr
    for i in range(n):
        param[i] -= step * grad[i]


def sgd_update(double lr,
               floating[::1] param,          # IN/OUT (n,)
               const floating[::1] grad):    # IN     (n,)
    """Plain gradient descent: param -= lr * grad."""
    with nogil:
        _sgd_update(lr, &param[0], &grad[0], param.shape[0])
