# Pointer-level update kernels shared with the fused training plan.
#
# Every kernel updates a flat parameter buffer in place from a gradient
# buffer of the same length (and, for the stateful rules, state buffers of
# that length too).  Scalar hyper-parameters arrive as double and are
# rounded once to the parameters' precision.  ``grad_scale`` multiplies each
# gradient element as it is read: 1.0 normally, clipnorm / ||g|| when the
# optimizer clips, so clipping never writes to the gradient buffer.
from cython cimport floating

cdef void _sgd_update(double lr, floating *param, const floating *grad,
                      Py_ssize_t n) noexcept nogil

cdef double _global_norm(const floating *x, Py_ssize_t n) noexcept nogil

cdef void _sgd_step(double lr, double weight_decay, double grad_scale,
                    floating *param, const floating *grad,
                    Py_ssize_t n) noexcept nogil

cdef void _sgd_momentum_step(double lr, double momentum, bint nesterov,
                             double weight_decay, double grad_scale,
                             floating *param, const floating *grad, floating *buf,
                             Py_ssize_t n) noexcept nogil

cdef void _adagrad_step(double lr, double eps, double grad_scale,
                        floating *param, const floating *grad, floating *sum_sq,
                        Py_ssize_t n) noexcept nogil

cdef void _rmsprop_step(double lr, double rho, double eps, double grad_scale,
                        floating *param, const floating *grad, floating *sq_avg,
                        Py_ssize_t n) noexcept nogil

cdef void _rmsprop_momentum_step(double lr, double rho, double eps, double momentum,
                                 double grad_scale, floating *param,
                                 const floating *grad, floating *sq_avg,
                                 floating *buf, Py_ssize_t n) noexcept nogil

cdef void _adam_step(double lr, double beta1, double beta2, double eps,
                     double l2, double decay, Py_ssize_t t, double grad_scale,
                     floating *param, const floating *grad, floating *m, floating *v,
                     Py_ssize_t n) noexcept nogil
