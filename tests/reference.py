"""Plain-NumPy formulas that tinycore's kernels are checked against.

Written for clarity, not speed, in float64.  Nothing here imports tinycore.
"""
import numpy as np


def numeric_grad(loss_fn, x, eps=1e-6):
    """Central differences of a scalar function with respect to array x (float64)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        up = loss_fn()
        x[idx] = saved - eps
        down = loss_fn()
        x[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad


# --- activations and their derivatives -------------------------------------

def _f64(z):
    return np.asarray(z, dtype=np.float64)


def sigmoid(z):
    """1 / (1 + exp(-z)), written with exp(-|z|) so it never overflows."""
    z = _f64(z)
    e = np.exp(-np.abs(z))               # in (0, 1]; may underflow to 0, harmlessly
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(z):
    s = sigmoid(z)
    return s * (1.0 - s)


def tanh(z):
    return np.tanh(_f64(z))


def tanh_grad(z):
    return 1.0 - np.tanh(_f64(z)) ** 2


def relu(z):
    z = _f64(z)
    return np.where(z > 0, z, 0.0)


def relu_grad(z):
    return np.where(_f64(z) > 0, 1.0, 0.0)          # 0 at z == 0


def leaky_relu(z, alpha=0.01):
    z = _f64(z)
    return np.where(z > 0, z, alpha * z)


def leaky_relu_grad(z, alpha=0.01):
    return np.where(_f64(z) > 0, 1.0, alpha)        # alpha at z == 0


def linear(z):
    return _f64(z).copy()


def linear_grad(z):
    return np.ones_like(_f64(z))


def step(z):
    return np.where(_f64(z) >= 0, 1.0, 0.0)         # 1 at z == 0


def step_grad(z):
    return np.zeros_like(_f64(z))                   # 0 everywhere, 0 included


def softmax(z):
    """Softmax along the last axis, the row maximum subtracted first."""
    z = _f64(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_grad(z, grad):
    """J^T grad for each row, with the explicit Jacobian J = diag(p) - p p^T."""
    p = np.atleast_2d(softmax(z))
    g = np.atleast_2d(_f64(grad))
    jac = np.einsum("ij,jk->ijk", p, np.eye(p.shape[1])) - np.einsum("ij,ik->ijk", p, p)
    return np.einsum("ijk,ij->ik", jac, g).reshape(np.shape(z))


#: Elementwise activation name -> (value, derivative); leaky_relu takes alpha.
ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "relu": (relu, relu_grad),
    "leaky_relu": (leaky_relu, leaky_relu_grad),
    "linear": (linear, linear_grad),
    "step": (step, step_grad),
}


# --- losses and their gradients ---------------------------------------------

def clamped_log(p):
    """log(p) clamped at -100 (PyTorch's convention), log(0) included."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(_f64(p)), -100.0)


def one_hot(labels, n_classes):
    return np.eye(n_classes)[np.asarray(labels, dtype=np.int64)]


def mse(pred, target):
    return np.mean((_f64(pred) - _f64(target)) ** 2)


def mse_grad(pred, target):
    pred = _f64(pred)
    return 2.0 * (pred - _f64(target)) / pred.size


def sse(pred, target):
    return 0.5 * np.sum((_f64(target) - _f64(pred)) ** 2)


def sse_grad(pred, target):
    return _f64(pred) - _f64(target)


def mae(pred, target):
    return np.mean(np.abs(_f64(pred) - _f64(target)))


def mae_grad(pred, target):
    pred = _f64(pred)
    return np.sign(pred - _f64(target)) / pred.size   # sign(0) = 0


def binary_cross_entropy(pred, target):
    p, t = _f64(pred), _f64(target)
    return np.mean(-(t * clamped_log(p) + (1.0 - t) * clamped_log(1.0 - p)))


def binary_cross_entropy_grad(pred, target):
    p, t = _f64(pred), _f64(target)
    return (p - t) / np.maximum(p * (1.0 - p), 1e-12) / p.size


def _target_rows(pred, target):
    target = np.asarray(target)
    if target.ndim == 1:                             # integer labels
        return one_hot(target, np.shape(pred)[1])
    return _f64(target)


def cross_entropy(pred, target):
    """Mean over rows of -sum_j t_j log p_j (labels become one-hot rows)."""
    p = _f64(pred)
    t = _target_rows(p, target)
    return np.sum(-t * clamped_log(p)) / p.shape[0]


def cross_entropy_grad(pred, target):
    p = _f64(pred)
    t = _target_rows(p, target)
    return -t / np.maximum(p, 1e-12) / p.shape[0]


#: Loss name -> (value, gradient with respect to pred).
LOSSES = {
    "mse": (mse, mse_grad),
    "sse": (sse, sse_grad),
    "mae": (mae, mae_grad),
    "binary_cross_entropy": (binary_cross_entropy, binary_cross_entropy_grad),
    "cross_entropy": (cross_entropy, cross_entropy_grad),
}


def log_softmax(z):
    z = _f64(z)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy_sum(logits, target):
    """Sum over rows of -sum_j t_j log softmax(z)_j, from the logits (labels or rows)."""
    t = _target_rows(logits, target)
    return np.sum(-t * log_softmax(logits))


def log_sigmoid(z):
    """log(1 / (1 + exp(-z))) = -log(1 + exp(-z)), via logaddexp (no overflow)."""
    return -np.logaddexp(0.0, -_f64(z))


def sigmoid_binary_cross_entropy_sum(logits, target):
    """Sum of -[t log s(z) + (1 - t) log(1 - s(z))], using 1 - s(z) = s(-z)."""
    z, t = _f64(logits), _f64(target)
    return np.sum(-(t * log_sigmoid(z) + (1.0 - t) * log_sigmoid(-z)))


# --- a dense network, forward and backward ----------------------------------
#
# A multilayer perceptron written out layer by layer, for checking
# tinycore.Sequential.  Self-contained on purpose (its own activation table,
# softmax through the explicit Jacobian matrix), so that it shares no code
# with the kernels nor with the sections above.  Rows are samples; layer k
# has W[k] of shape (in, out), b[k] of shape (out,) or None, an activation
# name and a leaky-ReLU slope.


def _net_activation(name, z, alpha):
    """act(z) for one layer; softmax is taken row by row."""
    if name == "sigmoid":
        return np.exp(-np.logaddexp(0.0, -z))          # 1 / (1 + e^-z), no overflow
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "linear":
        return z.copy()
    if name == "step":
        return np.where(z >= 0, 1.0, 0.0)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown activation {name!r}")


def _net_activation_backward(name, z, a, da, alpha):
    """dL/dz from dL/da for one layer (z its pre-activation, a = act(z))."""
    if name == "sigmoid":
        return da * a * (1.0 - a)
    if name == "tanh":
        return da * (1.0 - a * a)
    if name == "relu":
        return da * (z > 0)
    if name == "leaky_relu":
        return da * np.where(z > 0, 1.0, alpha)
    if name == "linear":
        return da.copy()
    if name == "step":
        return np.zeros_like(da)                       # flat everywhere
    if name == "softmax":
        dz = np.empty_like(da)
        for row in range(da.shape[0]):
            p = a[row]
            jacobian = np.diag(p) - np.outer(p, p)     # d p_i / d z_j
            dz[row] = jacobian.T @ da[row]
        return dz
    raise ValueError(f"unknown activation {name!r}")


def _per_layer(value, n_layers):
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * n_layers


def dense_net_forward(X, weights, biases, activations, alphas=0.01):
    """Forward pass of an MLP in float64.

    Returns (output, cache) where cache[k] = (input, Z, A) of layer k.
    """
    n_layers = len(weights)
    alphas = _per_layer(alphas, n_layers)
    A = np.asarray(X, dtype=np.float64)
    cache = []
    for W, b, name, alpha in zip(weights, biases, activations, alphas):
        Z = A @ np.asarray(W, dtype=np.float64)
        if b is not None:
            Z = Z + np.asarray(b, dtype=np.float64)
        out = _net_activation(name, Z, alpha)
        cache.append((A, Z, out))
        A = out
    return A, cache


def dense_net_backward(cache, weights, activations, grad_out, alphas=0.01,
                       has_bias=True):
    """Backward pass of :func:`dense_net_forward` from dL/d(output).

    Returns (dWs, dbs, dX); dbs[k] is None for a layer without bias.
    """
    n_layers = len(weights)
    alphas = _per_layer(alphas, n_layers)
    has_bias = _per_layer(has_bias, n_layers)
    dWs, dbs = [None] * n_layers, [None] * n_layers
    grad = np.asarray(grad_out, dtype=np.float64)
    for k in reversed(range(n_layers)):
        A_in, Z, A = cache[k]
        dZ = _net_activation_backward(activations[k], Z, A, grad, alphas[k])
        dWs[k] = A_in.T @ dZ                           # (in, batch) @ (batch, out)
        dbs[k] = dZ.sum(axis=0) if has_bias[k] else None
        grad = dZ @ np.asarray(weights[k], dtype=np.float64).T
    return dWs, dbs, grad


def dense_net_loss(name, out, target):
    """(value, dL/d(out)) of a loss on an MLP output, in float64.

    mse: mean (a - t)^2; sse: 1/2 sum (t - a)^2; mae: mean |a - t|;
    binary_cross_entropy: mean -[t log a + (1 - t) log(1 - a)];
    cross_entropy: mean over rows of -sum_j t_j log a_j (t integer labels
    or rows).
    """
    a = np.asarray(out, dtype=np.float64)
    t = np.asarray(target)
    if name == "cross_entropy":
        if t.ndim == 1:
            t = np.eye(a.shape[1])[t.astype(np.int64)]
        t = t.astype(np.float64)
        return -np.sum(t * np.log(a)) / a.shape[0], -t / a / a.shape[0]
    t = t.astype(np.float64).reshape(a.shape)
    n = a.size
    if name == "mse":
        return np.sum((a - t) ** 2) / n, 2.0 * (a - t) / n
    if name == "sse":
        return 0.5 * np.sum((t - a) ** 2), a - t
    if name == "mae":
        return np.sum(np.abs(a - t)) / n, np.sign(a - t) / n
    if name == "binary_cross_entropy":
        value = -np.sum(t * np.log(a) + (1.0 - t) * np.log(1.0 - a)) / n
        return value, (a - t) / (a * (1.0 - a)) / n
    raise ValueError(f"unknown loss {name!r}")


# --- optimizer update rules ---------------------------------------------------
#
# One step of each rule in closed form, in float64, on copies: each function
# returns the new parameters and the new state and changes nothing it is given.
# Written from the papers' formulas (bias-corrected moments for Adam), not in
# the kernels' order of operations.

def clip_by_global_norm(g, clipnorm):
    """g scaled to L2 norm ``clipnorm`` if its norm is larger; else g."""
    g = _f64(g)
    if clipnorm is None:
        return g
    norm = np.sqrt(np.sum(g * g))
    return g * (clipnorm / norm) if norm > clipnorm else g


def sgd_rule(w, g, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """(w', buf') of torch.optim.SGD (dampening 0); buf None before the first step."""
    w, g = _f64(w), _f64(g)
    g = g + weight_decay * w
    if momentum == 0.0:
        return w - lr * g, buf
    buf = g.copy() if buf is None else momentum * _f64(buf) + g
    step = g + momentum * buf if nesterov else buf
    return w - lr * step, buf


def adagrad_rule(w, g, sum_sq, lr, eps):
    """(w', sum_sq'): sum_sq' = sum_sq + g^2, w' = w - lr g / (sqrt(sum_sq') + eps)."""
    w, g = _f64(w), _f64(g)
    sum_sq = _f64(sum_sq) + g ** 2
    return w - lr * g / (np.sqrt(sum_sq) + eps), sum_sq


def rmsprop_rule(w, g, sq_avg, buf, lr, rho, eps, momentum=0.0):
    """(w', sq_avg', buf') of torch.optim.RMSprop (alpha = rho, not centred)."""
    w, g = _f64(w), _f64(g)
    sq_avg = rho * _f64(sq_avg) + (1.0 - rho) * g ** 2
    direction = g / (np.sqrt(sq_avg) + eps)
    if momentum == 0.0:
        return w - lr * direction, sq_avg, buf
    buf = momentum * _f64(buf) + direction
    return w - lr * buf, sq_avg, buf


def adam_rule(w, g, m, v, t, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False):
    """(w', m', v') of Adam step t >= 1 (Kingma & Ba, Algorithm 1, with eps added
    to sqrt(v_hat) as PyTorch does).  ``decoupled``: AdamW's decay
    w *= 1 - lr wd before the step, instead of wd w added to the gradient."""
    w, g = _f64(w), _f64(g)
    if decoupled:
        w = w * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * w
    m = beta1 * _f64(m) + (1.0 - beta1) * g
    v = beta2 * _f64(v) + (1.0 - beta2) * g ** 2
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# --- the small-product kernel: exact rounding, step by step ----------------

def two_sum(x, y):
    """s, e with s = fl(x + y) and s + e = x + y exactly (Knuth)."""
    s = x + y
    y_part = s - x
    return s, (x - (s - y_part)) + (y - y_part)


def two_product(x, y):
    """p, e with p = fl(x * y) and p + e = x * y exactly (Dekker, Veltkamp's split)."""
    def split(v):
        big = v * 134217729.0          # 2**27 + 1
        high = big - (big - v)
        return high, v - high
    p = x * y
    x_hi, x_lo = split(x)
    y_hi, y_lo = split(y)
    return p, ((x_hi * y_hi - p) + x_hi * y_lo + x_lo * y_hi) + x_lo * y_lo


def round_with_remainder(value, remainder, dtype):
    """value + remainder rounded to ``dtype``, where ``value`` is representable
    in float64 with more precision than ``dtype`` and ``remainder`` is smaller
    than half a float64 ulp of it: only a value exactly halfway between two
    ``dtype`` neighbours needs the remainder, to say which side it is on."""
    rounded = value.astype(dtype)
    wide = rounded.astype(np.float64)
    other = np.nextafter(rounded, np.where(value > wide, np.inf, -np.inf).astype(dtype))
    halfway = (wide != value) & (wide + other.astype(np.float64) == 2 * value)
    # Halfway, and the remainder on the other neighbour's side: that one.
    past = halfway & ((other.astype(np.float64) - value) * remainder > 0)
    return np.where(past, other, rounded)


def fused_multiply_add(x, y, s):
    """x * y + s rounded once, elementwise, in the dtype of the operands."""
    with np.errstate(invalid="ignore", over="ignore"):   # inf - inf on the way to NaN
        return _fused_multiply_add_exactly(x, y, s)


def _fused_multiply_add_exactly(x, y, s):
    dtype = s.dtype
    if dtype == np.float32:
        # The product of two float32 values is exact in float64.
        total, remainder = two_sum(x.astype(np.float64) * y.astype(np.float64),
                                   s.astype(np.float64))
        result = round_with_remainder(total, remainder, np.float32)
    else:
        product, product_error = two_product(x, y)
        high, low = two_sum(product, s)
        middle, tail = two_sum(low, product_error)
        # The exact sum is high + middle + tail, |tail| <= ulp(middle) / 2.
        result, error = two_sum(high, middle)
        up = np.nextafter(result, np.where(error > 0, np.inf, -np.inf))
        halfway = (error != 0) & (np.abs(up - result) == 2 * np.abs(error))
        result = np.where(halfway & (tail * error > 0), up, result)
    plain = x * y + s
    return np.where(np.isfinite(plain), result, plain).astype(dtype)


def in_order_product(trans_a, trans_b, alpha, a, b, beta, c, fused):
    """alpha * op(a) @ op(b) + beta * c as tinycore's small-product kernel
    computes it, rounding step by step in a's dtype.

    Each element is a sum over p in increasing order, started from the first
    product.  Each further step is one fused multiply-add (rounded once)
    with ``fused`` (the kernel's rule where its instruction set has FMA),
    else a product, then an addition, each rounded (NumPy never fuses them).
    alpha and beta are applied in float64 and the result rounded once.
    Matching this bit for bit is what makes the SIMD builds of the kernel
    agree: vector width may change which elements are computed together,
    never these steps.
    """
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    total = op_a[:, :1] * op_b[:1, :]
    for p in range(1, op_a.shape[1]):
        x, y = np.broadcast_arrays(op_a[:, p:p + 1], op_b[p:p + 1, :])
        total = (fused_multiply_add(x, y, total) if fused
                 else total + op_a[:, p:p + 1] * op_b[p:p + 1, :])
    scaled = alpha * total.astype(np.float64)
    if beta != 0.0:
        scaled = scaled + beta * c.astype(np.float64)
    return scaled.astype(a.dtype)
