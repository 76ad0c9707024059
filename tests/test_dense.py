"""Gradients of dense networks: finite differences and a plain-NumPy MLP.

Every check runs through the public API (``model.forward``, ``loss.grad``,
``model.backward``, ``model.train_step``) and compares with numbers that
tinycore did not compute: central differences of the plain-NumPy loss
(``reference.dense_net_loss``) of the model's output, and the plain-NumPy
network of ``reference.dense_net_forward`` / ``dense_net_backward``.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import reference
import tinycore as tc

#: Tolerances against a float64 reference (as in conftest.TOLERANCE).
TOL = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-5),
       np.dtype("float64"): dict(rtol=1e-10, atol=1e-12)}
#: Central differences (eps 1e-6, float64) against an analytic gradient.
FD_TOL = dict(rtol=1e-6, atol=1e-8)

SMOOTH_OR_KINKED = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
REGRESSION_LOSSES = ["mse", "sse", "mae"]
# Kinks of the piecewise activations are at z = 0: keep every |z| above this,
# far beyond what a finite-difference step of 1e-6 can move it.
MARGIN = 1e-2


# --- helpers -----------------------------------------------------------------

def build(sizes, activations, *, dtype="float64", seed=0, bias=True, alpha=0.2,
          rng=None):
    """A Sequential of Dense layers; with ``rng``, biases set to small random values."""
    biases = bias if isinstance(bias, (list, tuple)) else [bias] * len(activations)
    layers = [tc.Dense(n_in, n_out, activation=act, bias=has_bias, alpha=alpha)
              for n_in, n_out, act, has_bias in zip(sizes[:-1], sizes[1:], activations, biases)]
    model = tc.Sequential(layers, dtype=dtype, seed=seed)
    if rng is not None:
        for layer in model.layers:
            if layer.b is not None:
                layer.b[...] = rng.normal(0.0, 0.3, layer.b.shape)
    return model


def ref_forward(model, X):
    """The plain-NumPy forward pass with the model's parameters (as float64)."""
    weights = [layer.W.astype(np.float64) for layer in model.layers]
    biases = [None if layer.b is None else layer.b.astype(np.float64) for layer in model.layers]
    acts = [layer.activation for layer in model.layers]
    alphas = [layer.alpha for layer in model.layers]
    return reference.dense_net_forward(X, weights, biases, acts, alphas)


def ref_backward(model, cache, grad_out):
    weights = [layer.W.astype(np.float64) for layer in model.layers]
    acts = [layer.activation for layer in model.layers]
    alphas = [layer.alpha for layer in model.layers]
    has_bias = [layer.b is not None for layer in model.layers]
    return reference.dense_net_backward(cache, weights, acts, grad_out, alphas, has_bias)


def away_from_kinks(model, cache):
    """Whether every piecewise unit's pre-activation is at least MARGIN from 0,
    and no ReLU layer is dead for the whole batch (a vacuous zero gradient)."""
    for layer, (_, Z, _) in zip(model.layers, cache):
        if layer.activation in ("relu", "leaky_relu", "step") and np.abs(Z).min() < MARGIN:
            return False
        if layer.activation == "relu" and (Z > 0).mean() < 0.25:
            return False
    return True


def draw_inputs(rng, model, n_samples=5, tries=500):
    """Inputs (float64) for which no ReLU-like unit sits on its kink."""
    for _ in range(tries):
        X = rng.uniform(-1.5, 1.5, size=(n_samples, model.in_features))
        out, cache = ref_forward(model, X)
        if away_from_kinks(model, cache):
            return X, out, cache
    pytest.fail("could not draw inputs away from the ReLU kinks")


def draw_target(rng, loss, out):
    """Targets for ``loss`` given the reference output ``out``."""
    n, k = out.shape
    if loss == "mae":
        # |out - target| >= 0.2 everywhere: no sample on the kink of |.|.
        return out + rng.choice([-1.0, 1.0], size=out.shape) * rng.uniform(0.2, 1.0, out.shape)
    if loss in ("mse", "sse"):
        return rng.normal(size=out.shape)
    if loss == "binary_cross_entropy":
        return rng.uniform(0.05, 0.95, size=out.shape)        # soft targets in (0, 1)
    if loss == "labels":
        return rng.integers(0, k, size=n)
    if loss == "one_hot":
        return np.eye(k)[rng.integers(0, k, size=n)]
    if loss == "soft_rows":
        # Non-negative weights whose rows need not sum to 1: the fused
        # gradient is then p * sum(t) - t, not p - t.
        return rng.uniform(0.0, 1.0, size=out.shape)
    raise AssertionError(loss)


def loss_name(target_kind):
    return ("cross_entropy" if target_kind in ("labels", "one_hot", "soft_rows")
            else target_kind)


def numeric_param_grads(model, X, name, target):
    """Central differences of the plain-NumPy loss of ``model.forward(X)``."""
    def loss_fn():
        return reference.dense_net_loss(name, model.forward(X), target)[0]
    params = [reference.numeric_grad(loss_fn, p) for p in model.parameters()]
    dX = reference.numeric_grad(loss_fn, X)
    return params, dX


def check_forward_backward_against_fd(model, X, target, name):
    loss = tc.losses.get(name)
    out = model.forward(X)
    # The loss value itself agrees with the plain-NumPy formula.
    assert loss.value(out, target) == pytest.approx(
        reference.dense_net_loss(name, out, target)[0], rel=1e-12, abs=1e-14)
    dX = model.backward(loss.grad(out, target))
    analytic = [g.copy() for g in model.gradients()]
    dX = dX.copy()
    numeric, numeric_dX = numeric_param_grads(model, X, name, target)
    assert len(analytic) == len(numeric)
    for got, expected in zip(analytic, numeric):
        assert_allclose(got, expected, **FD_TOL)
    assert_allclose(dX, numeric_dX, **FD_TOL)


def check_train_step_against_fd(model, X, target, name, lr=0.1):
    model.compile(loss=name, optimizer=tc.SGD(lr=lr))
    expected_loss = reference.dense_net_loss(name, ref_forward(model, X)[0], target)[0]

    def loss_fn():
        return reference.dense_net_loss(name, model.forward(X), target)[0]

    # Differentiate with respect to the whole flat buffer: this also checks
    # that layer.W / layer.b are laid out where the optimizer updates them.
    numeric = reference.numeric_grad(loss_fn, model.param_buffer)
    before = model.param_buffer.copy()
    value = model.train_step(X, target)
    assert value == pytest.approx(expected_loss, rel=1e-10, abs=1e-14)
    # w_new = w - lr * dL/dw, so (w - w_new) / lr is the gradient it used.
    assert_allclose((before - model.param_buffer) / lr, numeric, **FD_TOL)
    assert not np.array_equal(before, model.param_buffer)


# --- regression losses, every elementwise activation ---------------------------

NETS = {"2-layer": (3, 4, 2), "3-layer": (3, 5, 4, 2)}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGRESSION_LOSSES)
@pytest.mark.parametrize("act", SMOOTH_OR_KINKED)
def test_backward_matches_finite_differences_regression(act, name, net, rng):
    sizes = NETS[net]
    model = build(sizes, [act] * (len(sizes) - 1), rng=rng)
    X, out, _ = draw_inputs(rng, model)
    target = draw_target(rng, name, out)
    check_forward_backward_against_fd(model, X, target, name)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGRESSION_LOSSES)
@pytest.mark.parametrize("act", SMOOTH_OR_KINKED)
def test_train_step_update_is_minus_lr_times_numeric_gradient(act, name, net, rng):
    sizes = NETS[net]
    model = build(sizes, [act] * (len(sizes) - 1), rng=rng)
    X, out, _ = draw_inputs(rng, model)
    target = draw_target(rng, name, out)
    check_train_step_against_fd(model, X, target, name)


MIXED = [
    ["tanh", "leaky_relu", "sigmoid"],
    ["relu", "sigmoid", "linear"],
    ["leaky_relu", "relu", "tanh"],
    ["sigmoid", "softmax", "linear"],     # a hidden softmax: its full Jacobian
    ["linear", "tanh", "softmax"],        # softmax output with a regression loss
]


@pytest.mark.parametrize("name", REGRESSION_LOSSES)
@pytest.mark.parametrize("acts", MIXED, ids="-".join)
def test_mixed_activation_stacks(acts, name, rng):
    model = build((4, 5, 3, 3), acts, rng=rng)
    X, out, _ = draw_inputs(rng, model)
    target = draw_target(rng, name, out)
    check_forward_backward_against_fd(model, X, target, name)
    check_train_step_against_fd(model, X, target, name)


def test_leaky_relu_default_alpha(rng):
    # The default slope 0.01 (the others use alpha=0.2 to make it visible).
    model = build((3, 6, 2), ["leaky_relu", "leaky_relu"], alpha=0.01, rng=rng)
    assert all(layer.alpha == 0.01 for layer in model.layers)
    X, out, cache = draw_inputs(rng, model, n_samples=8)
    assert (cache[0][1] < 0).any()            # some units on the negative side
    check_forward_backward_against_fd(model, X, draw_target(rng, "mse", out), "mse")


# --- classification: the fused and the unfused paths ----------------------------

CLASSIFIERS = {
    "sigmoid-bce-2": ((3, 4, 2), ["tanh", "sigmoid"], "binary_cross_entropy"),
    "sigmoid-bce-3": ((3, 5, 4, 1), ["relu", "tanh", "sigmoid"], "binary_cross_entropy"),
    "softmax-labels-2": ((3, 4, 3), ["tanh", "softmax"], "labels"),
    "softmax-labels-3": ((3, 5, 4, 4), ["relu", "leaky_relu", "softmax"], "labels"),
    "softmax-onehot-2": ((3, 4, 3), ["sigmoid", "softmax"], "one_hot"),
    "softmax-onehot-3": ((3, 5, 4, 4), ["leaky_relu", "tanh", "softmax"], "one_hot"),
    "softmax-soft-rows-2": ((3, 4, 3), ["tanh", "softmax"], "soft_rows"),
    "softmax-soft-rows-3": ((3, 5, 4, 4), ["relu", "sigmoid", "softmax"], "soft_rows"),
}


@pytest.mark.parametrize("case", CLASSIFIERS)
def test_classification_backward_unfused_matches_finite_differences(case, rng):
    # model.backward(loss.grad(...)) goes through the loss's own 1/p and the
    # output activation's derivative (the softmax Jacobian), not the fused path.
    sizes, acts, kind = CLASSIFIERS[case]
    model = build(sizes, acts, rng=rng)
    X, out, _ = draw_inputs(rng, model)
    target = draw_target(rng, kind, out)
    check_forward_backward_against_fd(model, X, target, loss_name(kind))


@pytest.mark.parametrize("case", CLASSIFIERS)
def test_classification_train_step_fused_matches_finite_differences(case, rng):
    sizes, acts, kind = CLASSIFIERS[case]
    model = build(sizes, acts, rng=rng)
    X, out, _ = draw_inputs(rng, model)
    target = draw_target(rng, kind, out)
    check_train_step_against_fd(model, X, target, loss_name(kind))


def test_bce_one_output_accepts_1d_targets(rng):
    # With one output unit, targets of shape (batch,) mean the same as (batch, 1).
    model = build((3, 4, 1), ["tanh", "sigmoid"], rng=np.random.default_rng(7))
    twin = build((3, 4, 1), ["tanh", "sigmoid"], rng=np.random.default_rng(7))
    X, out, _ = draw_inputs(rng, model)
    target = rng.uniform(0.1, 0.9, size=X.shape[0])
    check_train_step_against_fd(model, X, target.reshape(-1, 1), "binary_cross_entropy")
    twin.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=0.1))
    twin.train_step(X, target)
    assert_array_equal(twin.param_buffer, model.param_buffer)


def test_fused_softmax_cross_entropy_gradient_is_p_minus_y_for_huge_logits():
    # One softmax layer, x = [1], W = [[1000, 0, -1000]], b = 0: logits
    # z = [1000, 0, -1000], so p = softmax(z) = [1, e^-1000, e^-2000] = [1, 0, 0]
    # in floating point.  Label 1: the loss is -log p_1 = logsumexp(z) - z_1
    # = 1000 - 0 = 1000, and the fused gradient dL/dz = (p - y) / batch
    # = [1, -1, 0].  (Unfused, -1/p_1 = -1e12 times a Jacobian of 0s.)
    model = tc.Sequential([tc.Dense(1, 3, activation="softmax")], dtype="float64")
    model.layers[0].W[...] = [[1000.0, 0.0, -1000.0]]
    model.layers[0].b[...] = 0.0
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.5))
    loss = model.train_step(np.array([[1.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0, rel=1e-12)
    # b_new = 0 - 0.5 * [1, -1, 0];  W_new = W - 0.5 * x^T (p - y) = W - 0.5 * [1, -1, 0]
    assert_allclose(model.layers[0].b, [-0.5, 0.5, 0.0], rtol=0, atol=1e-300)
    assert_allclose(model.layers[0].W, [[999.5, 0.5, -1000.0]], rtol=0, atol=1e-12)


def test_fused_sigmoid_bce_is_exact_for_huge_logits():
    # One sigmoid unit, x = 1, w = 1000, b = 0: z = 1000, p = s(1000) = 1 in
    # floating point, target 0.  The loss is -log(1 - s(z)) = log(1 + e^z)
    # = 1000 + log(1 + e^-1000) = 1000 (the log of 0 never taken), and
    # dL/dz = (p - t) / N = 1, so b_new = 0 - 0.1 * 1 and w_new = 1000 - 0.1 * 1 * x.
    model = tc.Sequential([tc.Dense(1, 1, activation="sigmoid")], dtype="float64")
    model.layers[0].W[...] = 1000.0
    model.layers[0].b[...] = 0.0
    model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert model.train_step(np.array([[1.0]]), np.array([0.0])) == pytest.approx(1000.0, rel=1e-12)
    assert model.layers[0].b[0] == pytest.approx(-0.1, rel=1e-12)
    assert model.layers[0].W[0, 0] == pytest.approx(999.9, rel=1e-15)


def test_fused_sigmoid_bce_gradient_is_p_minus_t_over_n():
    # One sigmoid unit, x = [[1], [-1]] (batch 2), w = 2, b = 0:
    # z = [2, -2], p = s(z) = [0.880797..., 0.119203...], targets [1, 1].
    # dL/dz = (p - t) / N with N = 2 elements; db = sum = (p1 - 1 + p2 - 1) / 2
    # = (1 - 2) / 2 = -0.5 since s(2) + s(-2) = 1.  dw = (x^T (p - t)) / 2
    # = ((p1 - 1) - (p2 - 1)) / 2 = (p1 - p2) / 2.
    s2 = 1.0 / (1.0 + np.exp(-2.0))
    model = tc.Sequential([tc.Dense(1, 1, activation="sigmoid")], dtype="float64")
    model.layers[0].W[...] = 2.0
    model.layers[0].b[...] = 0.0
    model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=1.0))
    loss = model.train_step(np.array([[1.0], [-1.0]]), np.array([1.0, 1.0]))
    # loss = mean(-log p) = (-log s(2) - log s(-2)) / 2
    assert loss == pytest.approx((-np.log(s2) - np.log(1 - s2)) / 2, rel=1e-12)
    assert model.layers[0].b[0] == pytest.approx(0.5, rel=1e-12)
    assert model.layers[0].W[0, 0] == pytest.approx(2.0 - (s2 - (1 - s2)) / 2, rel=1e-12)


# --- against the plain-NumPy network ---------------------------------------------

REF_NETS = [
    ((4, 6, 5, 3), ["tanh", "relu", "softmax"]),
    ((4, 6, 5, 3), ["leaky_relu", "sigmoid", "linear"]),
    ((4, 6, 5, 2), ["linear", "softmax", "tanh"]),
    ((4, 3, 2), ["step", "sigmoid"]),
    ((5, 7, 1), ["relu", "sigmoid"]),
]


@pytest.mark.parametrize("sizes,acts", REF_NETS, ids=lambda v: "-".join(map(str, v)))
def test_forward_and_backward_match_numpy_reference(sizes, acts, dtype, rng):
    model = build(sizes, acts, dtype=dtype, rng=rng)
    X, ref_out, cache = draw_inputs(rng, model, n_samples=7)
    out = model.forward(X)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert_allclose(out, ref_out, **TOL[dtype])
    grad_out = rng.normal(size=out.shape)
    dX = model.backward(grad_out)
    dWs, dbs, ref_dX = ref_backward(model, cache, grad_out)
    assert dX.dtype == dtype
    assert_allclose(dX, ref_dX, **TOL[dtype])
    for layer, dW, db in zip(model.layers, dWs, dbs):
        assert layer.dW.dtype == dtype
        assert_allclose(layer.dW, dW, **TOL[dtype])
        assert_allclose(layer.db, db, **TOL[dtype])
    # The layers keep what backward needs: their input, Z and A.
    for layer, (A_in, Z, A) in zip(model.layers, cache):
        assert_allclose(layer.X, A_in, **TOL[dtype])
        assert_allclose(layer.Z, Z, **TOL[dtype])
        assert_allclose(layer.A, A, **TOL[dtype])


@pytest.mark.parametrize("name", ["mse", "sse", "mae", "binary_cross_entropy"])
def test_train_step_matches_numpy_reference_update(name, dtype, rng):
    # One full training step against the plain-NumPy network and loss.
    model = build((4, 6, 3), ["tanh", "sigmoid"], dtype=dtype, rng=rng)
    X, ref_out, cache = draw_inputs(rng, model, n_samples=6)
    target = draw_target(rng, name, ref_out)
    value, grad_out = reference.dense_net_loss(name, ref_out, target)
    dWs, dbs, _ = ref_backward(model, cache, grad_out)
    lr = 0.3
    expected = np.concatenate([np.concatenate([(layer.W - lr * dW).ravel(), layer.b - lr * db])
                               for layer, dW, db in zip(model.layers, dWs, dbs)])
    model.compile(loss=name, optimizer=tc.SGD(lr=lr))
    assert model.train_step(X, target) == pytest.approx(value, rel=TOL[dtype]["rtol"])
    assert_allclose(model.param_buffer, expected, **TOL[dtype])


@pytest.mark.parametrize("kind", ["labels", "one_hot"])
def test_softmax_cross_entropy_train_step_matches_numpy_reference(kind, dtype, rng):
    model = build((4, 6, 3), ["relu", "softmax"], dtype=dtype, rng=rng)
    X, ref_out, cache = draw_inputs(rng, model, n_samples=6)
    target = draw_target(rng, kind, ref_out)
    rows = target if kind == "one_hot" else np.eye(3)[target]
    value = reference.dense_net_loss("cross_entropy", ref_out, target)[0]
    # The fused gradient with respect to the logits, (p - y) / batch, fed to
    # the layer below the softmax: backward of a linear copy of the output layer.
    dZ = (ref_out - rows) / X.shape[0]
    A_in = cache[1][0]
    dW1, db1 = A_in.T @ dZ, dZ.sum(axis=0)
    dA0 = dZ @ model.layers[1].W.astype(np.float64).T
    dZ0 = dA0 * (cache[0][1] > 0)
    dW0, db0 = X.T @ dZ0, dZ0.sum(axis=0)
    lr = 0.3
    expected = np.concatenate([(model.layers[0].W - lr * dW0).ravel(), model.layers[0].b - lr * db0,
                               (model.layers[1].W - lr * dW1).ravel(), model.layers[1].b - lr * db1])
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=lr))
    assert model.train_step(X, target) == pytest.approx(value, rel=TOL[dtype]["rtol"])
    assert_allclose(model.param_buffer, expected, **TOL[dtype])


# --- the binary step passes no gradient -------------------------------------------

@pytest.mark.parametrize("acts", [["tanh", "step", "sigmoid"],
                                  ["step", "relu", "linear"],
                                  ["sigmoid", "tanh", "step"]], ids="-".join)
def test_step_layer_blocks_the_gradient(acts, rng):
    model = build((3, 4, 4, 2), acts, rng=rng)
    X, _, _ = draw_inputs(rng, model)
    out = model.forward(X)
    dX = model.backward(rng.normal(size=out.shape))
    position = acts.index("step")
    for index, layer in enumerate(model.layers):
        if index <= position:
            # Exactly zero, not merely small: step' = 0.
            assert_array_equal(layer.dW, 0.0)
            assert_array_equal(layer.db, 0.0)
        else:
            assert np.abs(layer.dW).max() > 0
    assert_array_equal(dX, 0.0)


def test_step_layer_train_step_leaves_earlier_layers_unchanged(rng):
    model = build((3, 4, 4, 2), ["tanh", "step", "linear"], rng=rng)
    X, out, _ = draw_inputs(rng, model)
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.5))
    before = [p.copy() for p in model.parameters()]
    model.train_step(X, draw_target(rng, "mse", out))
    after = model.parameters()
    for index in range(4):                     # W0, b0, W1, b1: at or before the step
        assert_array_equal(after[index], before[index])
    assert not np.array_equal(after[4], before[4])   # the linear layer after it learns


# --- a layer without bias -------------------------------------------------------

def test_layer_without_bias(rng):
    model = build((3, 4, 2), ["tanh", "sigmoid"], bias=[False, True], rng=rng)
    first = model.layers[0]
    assert first.b is None and first.db is None
    assert len(model.parameters()) == 3 and len(model.gradients()) == 3
    assert model.param_buffer.size == 3 * 4 + 4 * 2 + 2
    X, out, cache = draw_inputs(rng, model)
    # z = X W, with no bias term at all.
    assert_allclose(first.forward(X), np.tanh(X @ first.W), rtol=1e-12)
    target = draw_target(rng, "mse", out)
    check_forward_backward_against_fd(model, X, target, "mse")
    check_train_step_against_fd(model, X, target, "mse")


def test_network_without_any_bias(rng):
    model = build((3, 4, 2), ["relu", "linear"], bias=False, rng=rng)
    assert model.param_buffer.size == 3 * 4 + 4 * 2
    X, out, _ = draw_inputs(rng, model)
    # A zero input gives exactly zero output without biases.
    assert_array_equal(model.forward(np.zeros((2, 3))), 0.0)
    check_train_step_against_fd(model, X, draw_target(rng, "sse", out), "sse")


# --- float32 against float64 -----------------------------------------------------

def test_float32_matches_float64(rng):
    sizes, acts = (5, 8, 6, 3), ["tanh", "leaky_relu", "softmax"]
    m32 = build(sizes, acts, dtype="float32", seed=4)
    m64 = build(sizes, acts, dtype="float64", seed=4)
    # Glorot draws are made in float64 and cast: the same seed gives the
    # float32 rounding of the float64 weights.
    assert_array_equal(m32.param_buffer, m64.param_buffer.astype(np.float32))
    m64.param_buffer[...] = m32.param_buffer           # exactly the same weights now
    X, _, cache = draw_inputs(rng, m64, n_samples=9)
    out32, out64 = m32.forward(X), m64.forward(X)
    assert out32.dtype == np.float32 and out64.dtype == np.float64
    assert_allclose(out32, out64, **TOL[np.dtype("float32")])
    grad = rng.normal(size=out64.shape)
    dX32, dX64 = m32.backward(grad), m64.backward(grad)
    assert_allclose(dX32, dX64, **TOL[np.dtype("float32")])
    assert_allclose(m32.grad_buffer, m64.grad_buffer, **TOL[np.dtype("float32")])
    y = rng.integers(0, 3, size=9)
    for model in (m32, m64):
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    assert m32.train_step(X, y) == pytest.approx(m64.train_step(X, y), rel=1e-5)
    assert m32.param_buffer.dtype == np.float32
    assert_allclose(m32.param_buffer, m64.param_buffer, **TOL[np.dtype("float32")])
