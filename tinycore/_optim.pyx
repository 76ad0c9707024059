"""In-place parameter update kernels.

Each optimizer step is one call over the model's flat parameter buffer and its
gradient buffer (and, for stateful optimizers, state buffers of the same size).
"""
from cython cimport floating


def sgd_update(double lr,
               floating[::1] param,          # IN/OUT (n,)
               const floating[::1] grad):    # IN     (n,)
    """Plain gradient descent: param -= lr * grad."""
    cdef Py_ssize_t i
    cdef floating step = <floating>lr
    with nogil:
        for i in range(param.shape[0]):
            param[i] -= step * grad[i]
