"""In-place parameter update kernels.

Each optimizer step is one call over the model's flat parameter buffer and its
gradient buffer (and, for stateful optimizers, state buffers of the same size).

The rules follow ``torch.optim`` term for term, in the parameters' own
precision as PyTorch computes them, so that the two agree to rounding.  Every
loop is branch-free: a choice made by a hyper-parameter (Nesterov or not,
momentum or not) picks the loop before it starts, and the terms a
hyper-parameter switches off are multiplications by 1 or additions of 0, which
are exact (``1*g == g``, ``g + 0*w == g``), so the general loop reproduces the
special case bit for bit.
"""
cimport numpy as cnp
from libc.math cimport fabs, isfinite, pow, sqrt, sqrtf
from cython cimport floating

cnp.import_array()

# Note on speed: C's sqrt() sets errno for a negative argument, so unless the
# build passes -fno-math-errno GCC guards every sqrt with a branch to the
# library call, and the Adagrad, RMSProp and Adam loops below do not
# vectorise (the SGD loops and the norm do).  The arguments are sums of
# squares, never negative, so that flag would change no result.  (A
# "#pragma GCC optimize" here does not help: GCC 12 ignores it for errno.)


cdef inline floating _sqrt(floating x) noexcept nogil:
    # sqrtf for float32: sqrt() would round-trip through double, which
    # gives the same value but keeps the loop from using packed float sqrt.
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


# --- plain SGD (also called by the compiled training plan) -------------------

cdef void _sgd_update(double lr, floating *param, const floating *grad,
                      Py_ssize_t n) noexcept nogil:
    # In the parameters' own precision, as PyTorch does: w -= lr * g.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr
    for i in range(n):
        param[i] -= step * grad[i]


# --- the global gradient norm, for clipping -----------------------------------

cdef double _global_norm(const floating *x, Py_ssize_t n) noexcept nogil:
    # ||x||_2 accumulated in double whatever the dtype: float32 squares cannot
    # overflow a double, and the sum loses far less to rounding.  Four
    # partial sums break the dependency chain of a single accumulator (a
    # fixed order, so the result is still deterministic).
    cdef Py_ssize_t i
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, total, biggest, scaled
    cdef Py_ssize_t n4 = n - n % 4
    for i in range(0, n4, 4):
        s0 += <double>x[i] * x[i]
        s1 += <double>x[i + 1] * x[i + 1]
        s2 += <double>x[i + 2] * x[i + 2]
        s3 += <double>x[i + 3] * x[i + 3]
    for i in range(n4, n):
        s0 += <double>x[i] * x[i]
    total = (s0 + s1) + (s2 + s3)
    if isfinite(total):
        return sqrt(total)
    # Overflow (float64 entries beyond ~1e154) or a NaN/inf entry: rescale by
    # the largest magnitude, as BLAS dnrm2 does, so that only a truly
    # non-finite gradient gives a non-finite norm.
    biggest = 0.0
    for i in range(n):
        if not fabs(x[i]) <= biggest:          # also true for NaN: it propagates
            biggest = fabs(x[i])
    if not isfinite(biggest):
        return biggest
    scaled = 0.0
    for i in range(n):
        scaled += (x[i] / biggest) * (x[i] / biggest)
    return biggest * sqrt(scaled)


# --- SGD with weight decay, momentum and Nesterov ------------------------------

cdef void _sgd_step(double lr, double weight_decay, double grad_scale,
                    floating *param, const floating *grad,
                    Py_ssize_t n) noexcept nogil:
    # torch.optim.SGD without momentum: g = c*dL/dw + wd*w (L2 decay added to
    # the gradient); w -= lr * g.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr, wd = <floating>weight_decay
    cdef floating c = <floating>grad_scale
    for i in range(n):
        param[i] -= step * (c * grad[i] + wd * param[i])


cdef void _sgd_momentum_step(double lr, double momentum, bint nesterov,
                             double weight_decay, double grad_scale,
                             floating *param, const floating *grad, floating *buf,
                             Py_ssize_t n) noexcept nogil:
    # torch.optim.SGD with momentum mu (dampening 0):  b = mu*b + g, then
    # w -= lr * b, or w -= lr * (g + mu*b) for Nesterov (Sutskever et al. 2013,
    # in PyTorch's form: the look-ahead expressed with the new buffer).
    # PyTorch sets b = g on the first step; the buffer starts at zero, and
    # mu*0 + g == g exactly, so the first step needs no special case.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr, mu = <floating>momentum
    cdef floating wd = <floating>weight_decay, c = <floating>grad_scale
    cdef floating g
    if nesterov:
        for i in range(n):
            g = c * grad[i] + wd * param[i]
            buf[i] = mu * buf[i] + g
            param[i] -= step * (g + mu * buf[i])
    else:
        for i in range(n):
            g = c * grad[i] + wd * param[i]
            buf[i] = mu * buf[i] + g
            param[i] -= step * buf[i]


# --- Adagrad ---------------------------------------------------------------------

cdef void _adagrad_step(double lr, double eps, double grad_scale,
                        floating *param, const floating *grad, floating *sum_sq,
                        Py_ssize_t n) noexcept nogil:
    # Duchi, Hazan & Singer (2011), as torch.optim.Adagrad: s += g*g;
    # w -= lr * g / (sqrt(s) + eps).  Each weight's step shrinks with the
    # squared gradients it has seen, so rarely-updated weights keep moving.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr, e = <floating>eps, c = <floating>grad_scale
    cdef floating g
    for i in range(n):
        g = c * grad[i]
        sum_sq[i] += g * g
        param[i] -= step * (g / (_sqrt(sum_sq[i]) + e))


# --- RMSProp -----------------------------------------------------------------------

cdef void _rmsprop_step(double lr, double rho, double eps, double grad_scale,
                        floating *param, const floating *grad, floating *sq_avg,
                        Py_ssize_t n) noexcept nogil:
    # Hinton's RMSProp, as torch.optim.RMSprop (not centred):
    # v = rho*v + (1-rho)*g*g;  w -= lr * g / (sqrt(v) + eps).
    # Adagrad's sum becomes a moving average, so the step does not die out.
    cdef Py_ssize_t i
    cdef floating step = <floating>lr, r = <floating>rho, e = <floating>eps
    cdef floating one_r = <floating>(1.0 - rho), c = <floating>grad_scale
    cdef floating g
    for i in range(n):
        g = c * grad[i]
        sq_avg[i] = r * sq_avg[i] + one_r * (g * g)
        param[i] -= step * (g / (_sqrt(sq_avg[i]) + e))


cdef void _rmsprop_momentum_step(double lr, double rho, double eps, double momentum,
                                 double grad_scale, floating *param,
                                 const floating *grad, floating *sq_avg,
                                 floating *buf, Py_ssize_t n) noexcept nogil:
    # As _rmsprop_step, with PyTorch's momentum: b = mu*b + g / (sqrt(v) + eps);
    # w -= lr * b.  (lr multiplies the buffer, not what goes into it: Keras
    # folds lr into the buffer instead, which differs when lr changes.)
    cdef Py_ssize_t i
    cdef floating step = <floating>lr, r = <floating>rho, e = <floating>eps
    cdef floating one_r = <floating>(1.0 - rho), mu = <floating>momentum
    cdef floating c = <floating>grad_scale
    cdef floating g
    for i in range(n):
        g = c * grad[i]
        sq_avg[i] = r * sq_avg[i] + one_r * (g * g)
        buf[i] = mu * buf[i] + g / (_sqrt(sq_avg[i]) + e)
        param[i] -= step * buf[i]


# --- Adam and AdamW ------------------------------------------------------------------

cdef void _adam_step(double lr, double beta1, double beta2, double eps,
                     double l2, double decay, Py_ssize_t t, double grad_scale,
                     floating *param, const floating *grad, floating *m, floating *v,
                     Py_ssize_t n) noexcept nogil:
    # Kingma & Ba (2015) in torch.optim.Adam's form, for step number t >= 1:
    #   g = c*dL/dw + l2*w                      (Adam's L2 decay; 0 for AdamW)
    #   m = b1*m + (1-b1)*g,  v = b2*v + (1-b2)*g*g
    #   w = decay*w - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    # decay = 1 - lr*wd is AdamW's decoupled weight decay (Loshchilov & Hutter
    # 2019), applied to w before the Adam step as PyTorch does; 1 for Adam.
    # eps sits outside the bias-corrected square root, as in PyTorch (Keras
    # adds it to the uncorrected sqrt(v) instead).  The bias corrections are
    # computed once, in double.
    cdef Py_ssize_t i
    cdef double bias1 = 1.0 - pow(beta1, <double>t)
    cdef double bias2 = 1.0 - pow(beta2, <double>t)
    cdef floating step = <floating>(lr / bias1)
    cdef floating root_bias2 = <floating>sqrt(bias2)
    cdef floating b1 = <floating>beta1, one_b1 = <floating>(1.0 - beta1)
    cdef floating b2 = <floating>beta2, one_b2 = <floating>(1.0 - beta2)
    cdef floating e = <floating>eps, wd = <floating>l2, keep = <floating>decay
    cdef floating c = <floating>grad_scale
    cdef floating g
    for i in range(n):
        g = c * grad[i] + wd * param[i]
        m[i] = b1 * m[i] + one_b1 * g
        v[i] = b2 * v[i] + one_b2 * (g * g)
        param[i] = keep * param[i] - step * (m[i] / (_sqrt(v[i]) / root_bias2 + e))


# --- a whole rule, for the fused training plan ----------------------------------

cdef void _apply_rule(const UpdateRule *rule, floating *param, const floating *grad,
                      Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """The rule's step on elements start <= i < start + n of the buffers: the
    kernel, and the choice between kernels, that the optimizer's own step()
    makes for the whole buffer, so that the two give the same bits."""
    cdef floating *s0 = <floating *>rule.state0 + start if rule.state0 != NULL else NULL
    cdef floating *s1 = <floating *>rule.state1 + start if rule.state1 != NULL else NULL
    param = param + start
    grad = grad + start
    if rule.kind == RULE_SGD:
        if rule.momentum > 0.0:
            _sgd_momentum_step(rule.lr, rule.momentum, rule.nesterov, rule.weight_decay,
                               rule.grad_scale, param, grad, s0, n)
        elif rule.weight_decay == 0.0 and rule.grad_scale == 1.0:
            _sgd_update(rule.lr, param, grad, n)
        else:
            _sgd_step(rule.lr, rule.weight_decay, rule.grad_scale, param, grad, n)
    elif rule.kind == RULE_ADAGRAD:
        _adagrad_step(rule.lr, rule.eps, rule.grad_scale, param, grad, s0, n)
    elif rule.kind == RULE_RMSPROP:
        if rule.momentum > 0.0:
            _rmsprop_momentum_step(rule.lr, rule.rho, rule.eps, rule.momentum,
                                   rule.grad_scale, param, grad, s0, s1, n)
        else:
            _rmsprop_step(rule.lr, rule.rho, rule.eps, rule.grad_scale, param, grad, s0, n)
    else:
        _adam_step(rule.lr, rule.beta1, rule.beta2, rule.eps, rule.weight_decay,
                   rule.decay, rule.t, rule.grad_scale, param, grad, s0, s1, n)


cdef void _set_grad_scale(UpdateRule *rule, const floating *grad, Py_ssize_t n) noexcept nogil:
    # Optimizer._grad_scale, in the same double arithmetic: clipnorm / ||g||
    # where the norm exceeds clipnorm, else 1 (a NaN norm exceeds nothing).
    cdef double norm
    rule.grad_scale = 1.0
    if rule.clipnorm > 0.0:
        norm = _global_norm(grad, n)
        if norm > rule.clipnorm:
            rule.grad_scale = rule.clipnorm / norm


cdef void *_state_buffer(object array, int typenum, Py_ssize_t n, str what,
                         bint required) except? NULL:
    # A state buffer's data, after the checks the kernels rely on (they have
    # no bounds checks): NULL for None where the rule does not need one.
    cdef cnp.ndarray arr
    if array is None and not required:
        return NULL
    if not cnp.PyArray_Check(array):
        raise TypeError(f"the optimizer's {what} buffer must be a numpy array, "
                        f"got {type(array).__name__}")
    arr = <cnp.ndarray>array
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != 1
            or cnp.PyArray_DIM(arr, 0) != n or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr) or not cnp.PyArray_ISWRITEABLE(arr)):
        raise ValueError(f"the optimizer's {what} buffer must be a writeable, contiguous "
                         f"1-D array of the model's {n} parameters in its dtype, got "
                         f"{(<object>arr).shape} {(<object>arr).dtype}")
    return cnp.PyArray_DATA(arr)


cdef int _read_rule(tuple rule, int typenum, Py_ssize_t n, UpdateRule *out) except -1:
    """Fill ``out`` from the tuple Optimizer._plan_rule() returns:

        (kind, lr, momentum, nesterov, weight_decay, decay, rho, beta1, beta2,
         eps, t, clipnorm, state0, state1)

    for a model of n parameters of NumPy type ``typenum``.  The optimizer
    has validated its hyper-parameters; this checks what the kernels could
    not survive: the kind, the step number and the state buffers."""
    cdef object state0, state1
    if len(rule) != 14:
        raise ValueError(f"an update rule has 14 fields, got {len(rule)}")
    (out.kind, out.lr, out.momentum, out.nesterov, out.weight_decay, out.decay, out.rho,
     out.beta1, out.beta2, out.eps, out.t, out.clipnorm, state0, state1) = rule
    if out.kind < RULE_SGD or out.kind > RULE_ADAM:
        raise ValueError(f"unknown update rule {<int>out.kind}")
    if out.kind == RULE_ADAM and out.t < 1:
        raise ValueError(f"Adam's step number t counts from 1, got {out.t}")
    out.grad_scale = 1.0
    out.state0 = _state_buffer(state0, typenum, n, "first state",
                               out.kind != RULE_SGD or out.momentum > 0.0)
    out.state1 = _state_buffer(state1, typenum, n, "second state",
                               out.kind == RULE_ADAM
                               or (out.kind == RULE_RMSPROP and out.momentum > 0.0))
    return 0


# --- Python wrappers over 1-D memoryviews ------------------------------------------
#
# The optimizers check sizes and dtypes before calling these; the length check
# here is one comparison per call and keeps a mistake from writing past a
# buffer (the loops run without bounds checks).

cdef int _same_length(Py_ssize_t n, Py_ssize_t other) except -1:
    if other != n:
        raise ValueError(f"buffers of different lengths: {n} and {other}")
    return 0


def sgd_update(double lr,
               floating[::1] param,          # IN/OUT (n,)
               const floating[::1] grad):    # IN     (n,)
    """Plain gradient descent: param -= lr * grad."""
    with nogil:
        _sgd_update(lr, &param[0], &grad[0], param.shape[0])


def global_norm(const floating[::1] x):      # IN (n,)
    """The L2 norm sqrt(sum x**2) of a flat buffer, computed in double."""
    cdef double norm
    with nogil:
        norm = _global_norm(&x[0], x.shape[0])
    return norm


def sgd_step(double lr, double weight_decay, double grad_scale,
             floating[::1] param,             # IN/OUT (n,)
             const floating[::1] grad):       # IN     (n,)
    """param -= lr * (grad_scale*grad + weight_decay*param)."""
    _same_length(param.shape[0], grad.shape[0])
    with nogil:
        _sgd_step(lr, weight_decay, grad_scale, &param[0], &grad[0], param.shape[0])


def sgd_momentum_step(double lr, double momentum, bint nesterov, double weight_decay,
                      double grad_scale,
                      floating[::1] param,        # IN/OUT (n,)
                      const floating[::1] grad,   # IN     (n,)
                      floating[::1] buf):         # IN/OUT (n,) momentum buffer
    """SGD with (Nesterov) momentum, as torch.optim.SGD with dampening 0."""
    _same_length(param.shape[0], grad.shape[0])
    _same_length(param.shape[0], buf.shape[0])
    with nogil:
        _sgd_momentum_step(lr, momentum, nesterov, weight_decay, grad_scale,
                           &param[0], &grad[0], &buf[0], param.shape[0])


def adagrad_step(double lr, double eps, double grad_scale,
                 floating[::1] param,             # IN/OUT (n,)
                 const floating[::1] grad,        # IN     (n,)
                 floating[::1] sum_sq):           # IN/OUT (n,) sum of squared gradients
    """Adagrad: sum_sq += g*g; param -= lr * g / (sqrt(sum_sq) + eps)."""
    _same_length(param.shape[0], grad.shape[0])
    _same_length(param.shape[0], sum_sq.shape[0])
    with nogil:
        _adagrad_step(lr, eps, grad_scale, &param[0], &grad[0], &sum_sq[0],
                      param.shape[0])


def rmsprop_step(double lr, double rho, double eps, double momentum, double grad_scale,
                 floating[::1] param,             # IN/OUT (n,)
                 const floating[::1] grad,        # IN     (n,)
                 floating[::1] sq_avg,            # IN/OUT (n,) mean squared gradient
                 floating[::1] buf=None):         # IN/OUT (n,) momentum buffer, if momentum > 0
    """RMSProp, as torch.optim.RMSprop (not centred); ``buf`` is used iff momentum > 0."""
    _same_length(param.shape[0], grad.shape[0])
    _same_length(param.shape[0], sq_avg.shape[0])
    if momentum > 0.0:
        if buf is None:
            raise ValueError("rmsprop_step with momentum > 0 needs a momentum buffer")
        _same_length(param.shape[0], buf.shape[0])
        with nogil:
            _rmsprop_momentum_step(lr, rho, eps, momentum, grad_scale, &param[0],
                                   &grad[0], &sq_avg[0], &buf[0], param.shape[0])
    else:
        with nogil:
            _rmsprop_step(lr, rho, eps, grad_scale, &param[0], &grad[0], &sq_avg[0],
                          param.shape[0])


def adam_step(double lr, double beta1, double beta2, double eps, double l2,
              double decay, Py_ssize_t t, double grad_scale,
              floating[::1] param,                # IN/OUT (n,)
              const floating[::1] grad,           # IN     (n,)
              floating[::1] m,                    # IN/OUT (n,) first moment
              floating[::1] v):                   # IN/OUT (n,) second moment
    """One Adam (l2 > 0: L2 decay) or AdamW (decay = 1 - lr*wd) step number ``t``."""
    if t < 1:
        raise ValueError(f"Adam's step number t counts from 1, got {t}")
    _same_length(param.shape[0], grad.shape[0])
    _same_length(param.shape[0], m.shape[0])
    _same_length(param.shape[0], v.shape[0])
    with nogil:
        _adam_step(lr, beta1, beta2, eps, l2, decay, t, grad_scale, &param[0],
                   &grad[0], &m[0], &v[0], param.shape[0])
