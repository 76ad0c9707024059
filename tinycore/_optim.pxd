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


# --- an optimizer's step as the fused training plan applies it -----------------
#
# Optimizer._plan_rule() describes the next step as a tuple that _read_rule
# turns into an UpdateRule; the plan then calls _apply_rule on each layer's
# slice of the buffers as soon as that layer's gradients are final.  Every
# rule is elementwise, so a slice at a time gives the same bits as one call
# over the whole buffer.

cpdef enum RuleKind:
    RULE_SGD = 1            # SGD with momentum, Nesterov and weight decay
    RULE_ADAGRAD = 2
    RULE_RMSPROP = 3
    RULE_ADAM = 4           # Adam (l2 = weight_decay) and AdamW (decay < 1)


cdef struct UpdateRule:
    RuleKind kind
    double lr
    double momentum         # SGD, RMSProp
    bint nesterov           # SGD
    double weight_decay     # SGD's and Adam's L2 term, added to the gradient
    double decay            # AdamW's factor on w before the step (1: none)
    double rho              # RMSProp
    double beta1, beta2     # Adam
    double eps              # Adagrad, RMSProp, Adam
    Py_ssize_t t            # Adam's step number, from 1
    double clipnorm         # clip to this global norm; 0: never
    double grad_scale       # 1, or clipnorm / ||g|| once the gradients are final
    void *state0            # momentum (SGD), sum_sq, sq_avg, m; or NULL
    void *state1            # RMSProp's momentum, Adam's v; or NULL


cdef int _read_rule(tuple rule, int typenum, Py_ssize_t n, UpdateRule *out) except -1

cdef void _apply_rule(const UpdateRule *rule, floating *param, const floating *grad,
                      Py_ssize_t start, Py_ssize_t n) noexcept nogil

cdef void _set_grad_scale(UpdateRule *rule, const floating *grad, Py_ssize_t n) noexcept nogil
