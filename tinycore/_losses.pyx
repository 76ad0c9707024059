"""Loss values and their gradients with respect to the prediction.

Each loss has a value loop (summed in double precision whatever the array
dtype) and a gradient loop writing into a caller-allocated array.  The two
fused kernels at the end start from the output layer's pre-activation z
instead of its output, which keeps them exact where the unfused formulas
would take the log of 0.
"""
from libc.math cimport exp, log, log1p, fabs, fmax
from libc.stdint cimport int64_t
from cython cimport floating

from ._activations cimport _SOFTMAX_BLOCK_ROWS, _softmax_rows

# PyTorch's conventions for probabilities of exactly 0 or 1: log(p) is clamped
# at -100 in the value, and the denominators of the gradients (p for
# cross-entropy, p(1 - p) for binary cross-entropy) at 1e-12, so that both stay
# finite even in float32.
cdef double LOG_FLOOR = -100.0
cdef double GRAD_EPS = 1e-12


cdef inline double _clamped_log(double p) noexcept nogil:
    if p <= 0.0:
        return LOG_FLOOR
    return fmax(log(p), LOG_FLOOR)


# ---------------------------------------------------------------------------
# Regression losses: pred and target have the same shape
# ---------------------------------------------------------------------------

cdef double _squared_error_sum(const floating *pred, const floating *target,
                               Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double diff, total = 0.0
    for i in range(n):
        diff = <double>pred[i] - target[i]
        total += diff * diff
    return total


cdef double _absolute_error_sum(const floating *pred, const floating *target,
                                Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0.0
    for i in range(n):
        total += fabs(<double>pred[i] - target[i])
    return total


cdef void _scaled_difference(double scale, const floating *pred,
                             const floating *target, floating *out,
                             Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>(scale * (<double>pred[i] - target[i]))


cdef void _scaled_sign_difference(double scale, const floating *pred,
                                  const floating *target, floating *out,
                                  Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double diff
    for i in range(n):
        diff = <double>pred[i] - target[i]
        out[i] = <floating>(scale if diff > 0 else (-scale if diff < 0 else 0.0))


def squared_error_sum(const floating[:, ::1] pred,      # IN
                      const floating[:, ::1] target):   # IN  same shape
    """Sum over all elements of (pred - target)^2, in double precision."""
    cdef double total
    with nogil:
        total = _squared_error_sum(&pred[0, 0], &target[0, 0], pred.shape[0] * pred.shape[1])
    return total


def absolute_error_sum(const floating[:, ::1] pred,      # IN
                       const floating[:, ::1] target):   # IN  same shape
    """Sum over all elements of |pred - target|, in double precision."""
    cdef double total
    with nogil:
        total = _absolute_error_sum(&pred[0, 0], &target[0, 0], pred.shape[0] * pred.shape[1])
    return total


def scaled_difference(double scale,
                      const floating[:, ::1] pred,      # IN
                      const floating[:, ::1] target,    # IN  same shape
                      floating[:, ::1] out):            # OUT same shape
    """out = scale * (pred - target): the gradient of MSE (scale 2/N) and SSE (1)."""
    with nogil:
        _scaled_difference(scale, &pred[0, 0], &target[0, 0], &out[0, 0],
                           pred.shape[0] * pred.shape[1])


def scaled_sign_difference(double scale,
                           const floating[:, ::1] pred,      # IN
                           const floating[:, ::1] target,    # IN  same shape
                           floating[:, ::1] out):            # OUT same shape
    """out = scale * sign(pred - target), with sign(0) = 0: the MAE gradient."""
    with nogil:
        _scaled_sign_difference(scale, &pred[0, 0], &target[0, 0], &out[0, 0],
                                pred.shape[0] * pred.shape[1])


# ---------------------------------------------------------------------------
# Binary cross-entropy on probabilities
# ---------------------------------------------------------------------------

def binary_cross_entropy_sum(const floating[:, ::1] prob,      # IN  in [0, 1]
                             const floating[:, ::1] target):   # IN  in [0, 1]
    """Sum over all elements of -[t log p + (1 - t) log(1 - p)]."""
    cdef Py_ssize_t i, j
    cdef double p, t, total = 0.0
    with nogil:
        for i in range(prob.shape[0]):
            for j in range(prob.shape[1]):
                p = prob[i, j]
                t = target[i, j]
                total -= t * _clamped_log(p) + (1.0 - t) * _clamped_log(1.0 - p)
    return total


def binary_cross_entropy_grad(double scale,
                              const floating[:, ::1] prob,     # IN
                              const floating[:, ::1] target,   # IN
                              floating[:, ::1] out):           # OUT
    """out = scale * (p - t) / max(p (1 - p), 1e-12)."""
    cdef Py_ssize_t i, j
    cdef double p
    with nogil:
        for i in range(prob.shape[0]):
            for j in range(prob.shape[1]):
                p = prob[i, j]
                out[i, j] = <floating>(scale * (p - target[i, j])
                                       / fmax(p * (1.0 - p), GRAD_EPS))


# ---------------------------------------------------------------------------
# Categorical cross-entropy on probabilities; targets are labels or rows
# ---------------------------------------------------------------------------

def cross_entropy_labels_sum(const floating[:, ::1] prob,     # IN  (n, classes)
                             const int64_t[::1] labels):      # IN  (n,) in [0, classes)
    """Sum over rows of -log p[row, label]."""
    cdef Py_ssize_t i
    cdef double total = 0.0
    with nogil:
        for i in range(prob.shape[0]):
            total -= _clamped_log(prob[i, labels[i]])
    return total


def cross_entropy_labels_grad(double scale,
                              const floating[:, ::1] prob,    # IN  (n, classes)
                              const int64_t[::1] labels,      # IN  (n,)
                              floating[:, ::1] out):          # OUT (n, classes)
    """out = scale * d(-log p[label])/dp: -scale/max(p, 1e-12) at the label, 0 elsewhere."""
    cdef Py_ssize_t i, j
    cdef double p
    with nogil:
        for i in range(prob.shape[0]):
            for j in range(prob.shape[1]):
                out[i, j] = 0
            p = prob[i, labels[i]]
            out[i, labels[i]] = <floating>(-scale / fmax(p, GRAD_EPS))


def cross_entropy_rows_sum(const floating[:, ::1] prob,      # IN  (n, classes)
                           const floating[:, ::1] target):   # IN  (n, classes), rows of weights
    """Sum over all elements of -t log p (t is one-hot or a distribution)."""
    cdef Py_ssize_t i, j
    cdef double total = 0.0
    with nogil:
        for i in range(prob.shape[0]):
            for j in range(prob.shape[1]):
                if target[i, j] != 0:
                    total -= target[i, j] * _clamped_log(prob[i, j])
    return total


def cross_entropy_rows_grad(double scale,
                            const floating[:, ::1] prob,     # IN
                            const floating[:, ::1] target,   # IN
                            floating[:, ::1] out):           # OUT
    """out = -scale * t / max(p, 1e-12)."""
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(prob.shape[0]):
            for j in range(prob.shape[1]):
                out[i, j] = <floating>(-scale * target[i, j]
                                       / fmax(prob[i, j], GRAD_EPS))


# ---------------------------------------------------------------------------
# Fused kernels: softmax + cross-entropy, sigmoid + binary cross-entropy
# ---------------------------------------------------------------------------

cdef double _softmax_cross_entropy_labels(
        double scale, const floating *logits, floating *prob, bint prob_from_logits,
        const int64_t *labels, floating *dz,
        Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    # With prob_from_logits the softmax is taken here, from the exps the
    # log-sum-exp needs (the training plan's forward pass leaves it to this
    # kernel); else dz is scratch for them until written below.  A block of
    # rows at a time: their log-sum-exps live on the stack.
    cdef double log_sum_exp[_SOFTMAX_BLOCK_ROWS]
    cdef floating *exps = prob if prob_from_logits else dz
    cdef Py_ssize_t start, rows, i, j
    cdef double total = 0.0
    start = 0
    while start < n_rows:       # (range() without the GIL takes only a literal step)
        rows = min(<Py_ssize_t>_SOFTMAX_BLOCK_ROWS, n_rows - start)
        _softmax_rows(logits + start * n_cols, exps + start * n_cols, rows, n_cols,
                      prob_from_logits, log_sum_exp)
        for i in range(start, start + rows):
            total += log_sum_exp[i - start] - logits[i * n_cols + labels[i]]
            for j in range(n_cols):
                dz[i * n_cols + j] = <floating>(scale * prob[i * n_cols + j])
            dz[i * n_cols + labels[i]] = <floating>(
                scale * (<double>prob[i * n_cols + labels[i]] - 1.0))
        start += rows
    return total


cdef double _softmax_cross_entropy_rows(
        double scale, const floating *logits, floating *prob, bint prob_from_logits,
        const floating *target, floating *dz,
        Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil:
    # As the labels' kernel, with a row of weights for the one-hot label.
    cdef double log_sum_exp[_SOFTMAX_BLOCK_ROWS]
    cdef floating *exps = prob if prob_from_logits else dz
    cdef Py_ssize_t start, rows, i, j, k
    cdef double lse, row_sum, total = 0.0
    start = 0
    while start < n_rows:       # (range() without the GIL takes only a literal step)
        rows = min(<Py_ssize_t>_SOFTMAX_BLOCK_ROWS, n_rows - start)
        _softmax_rows(logits + start * n_cols, exps + start * n_cols, rows, n_cols,
                      prob_from_logits, log_sum_exp)
        for i in range(start, start + rows):
            lse = log_sum_exp[i - start]
            row_sum = 0.0
            for j in range(n_cols):
                k = i * n_cols + j
                row_sum += target[k]
                if target[k] != 0:
                    total += target[k] * (lse - logits[k])
            for j in range(n_cols):
                k = i * n_cols + j
                dz[k] = <floating>(scale * (<double>prob[k] * row_sum - target[k]))
        start += rows
    return total


cdef double _sigmoid_binary_cross_entropy(
        double scale, const floating *logits, const floating *prob,
        const floating *target, floating *dz, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double z, total = 0.0
    for i in range(n):
        z = logits[i]
        total += fmax(z, 0.0) - z * target[i] + log1p(exp(-fabs(z)))
        dz[i] = <floating>(scale * (<double>prob[i] - target[i]))
    return total


def softmax_cross_entropy_labels(double scale,
                                 const floating[:, ::1] logits,   # IN  z of the softmax layer
                                 const floating[:, ::1] prob,     # IN  softmax(z)
                                 const int64_t[::1] labels,       # IN  (n,) in [0, classes)
                                 floating[:, ::1] dz):            # OUT dL/dz
    """Return sum_rows -log softmax(z)[label]; write dz = scale * (p - onehot).

    The value is computed as logsumexp(z) - z[label], which stays exact for
    logits of 1e4 where p underflows to 0; the gradient (p - y) needs no log.
    ``dz`` must not share memory with the inputs (it is scratch on the way).
    """
    cdef double total
    with nogil:
        # prob is only read (prob_from_logits is False): the cast drops const.
        total = _softmax_cross_entropy_labels(scale, &logits[0, 0], <floating *>&prob[0, 0],
                                              False, &labels[0], &dz[0, 0],
                                              logits.shape[0], logits.shape[1])
    return total


def softmax_cross_entropy_rows(double scale,
                               const floating[:, ::1] logits,   # IN
                               const floating[:, ::1] prob,     # IN
                               const floating[:, ::1] target,   # IN  rows of weights >= 0
                               floating[:, ::1] dz):            # OUT
    """Return sum_rows -sum_j t_j log softmax(z)_j; write dz = scale * (p S - t).

    S is the row sum of t: the chain rule through softmax gives
    dL/dz_j = p_j sum_k t_k - t_j, which is p - t for one-hot or
    probability rows, without any division by p.  ``dz`` must not share
    memory with the inputs (it is scratch on the way).
    """
    cdef double total
    with nogil:
        # prob is only read (prob_from_logits is False): the cast drops const.
        total = _softmax_cross_entropy_rows(scale, &logits[0, 0], <floating *>&prob[0, 0],
                                            False, &target[0, 0], &dz[0, 0],
                                            logits.shape[0], logits.shape[1])
    return total


def sigmoid_binary_cross_entropy(double scale,
                                 const floating[:, ::1] logits,   # IN  z of the sigmoid layer
                                 const floating[:, ::1] prob,     # IN  sigmoid(z)
                                 const floating[:, ::1] target,   # IN  in [0, 1]
                                 floating[:, ::1] dz):            # OUT dL/dz
    """Return sum of BCE computed from z; write dz = scale * (p - t).

    -[t log s(z) + (1-t) log(1 - s(z))] = max(z, 0) - z t + log(1 + exp(-|z|)),
    the form that never takes the log of 0 nor the exp of a large number.
    """
    cdef double total
    with nogil:
        total = _sigmoid_binary_cross_entropy(scale, &logits[0, 0], &prob[0, 0],
                                              &target[0, 0], &dz[0, 0],
                                              logits.shape[0] * logits.shape[1])
    return total
