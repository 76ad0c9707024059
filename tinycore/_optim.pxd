# Pointer-level update kernels shared with the fused training plan.
from cython cimport floating

cdef void _sgd_update(double lr, floating *param, const floating *grad,
                      Py_ssize_t n) noexcept nogil
