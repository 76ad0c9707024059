"""Sequential as a whole: seeds, parameter views, fit/predict/evaluate, layouts."""
from fractions import Fraction

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tinycore as tc

TOL = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-5),
       np.dtype("float64"): dict(rtol=1e-10, atol=1e-12)}


def mlp(dtype="float32", seed=0, sizes=(4, 8, 3), acts=("tanh", "softmax")):
    layers = [tc.Dense(n_in, n_out, activation=act)
              for n_in, n_out, act in zip(sizes[:-1], sizes[1:], acts)]
    return tc.Sequential(layers, dtype=dtype, seed=seed)


def classification_data(rng, n=10, n_features=4, n_classes=3):
    return rng.normal(size=(n, n_features)), rng.integers(0, n_classes, size=n)


# --- seeds and initialisation -----------------------------------------------------

def test_same_seed_same_weights(dtype):
    a, b = mlp(dtype, seed=3), mlp(dtype, seed=3)
    assert a.param_buffer.dtype == dtype
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_same_seed_same_weights_across_dtypes():
    # Drawn in float64, then cast: the float32 model holds the rounded weights.
    a, b = mlp("float32", seed=5), mlp("float64", seed=5)
    assert_array_equal(a.param_buffer, b.param_buffer.astype(np.float32))


def test_different_seeds_differ(dtype):
    a, b = mlp(dtype, seed=1), mlp(dtype, seed=2)
    assert not np.array_equal(a.layers[0].W, b.layers[0].W)
    assert not np.array_equal(a.layers[1].W, b.layers[1].W)
    # seed=None draws fresh entropy.
    c, d = mlp(dtype, seed=None), mlp(dtype, seed=None)
    assert not np.array_equal(c.param_buffer, d.param_buffer)


def test_training_twice_with_the_same_seed_is_bit_identical(dtype, rng):
    X, y = classification_data(rng, n=37)
    histories, buffers = [], []
    for _ in range(2):
        model = mlp(dtype, seed=11)
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.3))
        histories.append(model.fit(X, y, epochs=4, batch_size=8, shuffle=True, verbose=0))
        buffers.append(model.param_buffer.copy())
    assert_array_equal(buffers[0], buffers[1])
    assert histories[0].history == histories[1].history
    # ... and shuffling does change the run (otherwise the test above is weak).
    other = mlp(dtype, seed=11)
    other.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.3))
    other.fit(X, y, epochs=4, batch_size=8, shuffle=False, verbose=0)
    assert not np.array_equal(other.param_buffer, buffers[0])


def check_glorot_uniform(layer):
    limit = np.sqrt(6.0 / (layer.in_features + layer.out_features))
    W = layer.W.astype(np.float64)
    assert np.abs(W).max() <= limit * (1 + 1e-7)
    # Uniform on [-limit, limit]: the extremes come near both ends, the
    # mean is near 0 and the variance near limit^2 / 3.
    assert W.max() > 0.9 * limit and W.min() < -0.9 * limit
    assert abs(W.mean()) < 0.1 * limit
    assert W.std() == pytest.approx(limit / np.sqrt(3), rel=0.1)
    assert_array_equal(layer.b, 0.0)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear", "softmax", "step"])
def test_glorot_uniform_bounds(activation, dtype):
    model = tc.Sequential([tc.Dense(64, 32, activation=activation),
                           tc.Dense(32, 10, activation="softmax")], dtype=dtype, seed=0)
    for layer in model.layers:
        check_glorot_uniform(layer)
    # 64 x 32: limit = sqrt(6 / 96) = 0.25
    assert np.abs(model.layers[0].W).max() <= 0.25


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_he_uniform_is_the_default_for_relu_layers(activation, dtype):
    # init="auto": He-uniform, U(-l, l) with l = sqrt(6 / fan_in) = sqrt(6/64) ~ 0.306,
    # wider than Glorot's sqrt(6/96) = 0.25 for the same layer.
    model = tc.Sequential([tc.Dense(64, 32, activation=activation),
                           tc.Dense(32, 10, activation="softmax")], dtype=dtype, seed=0)
    W = model.layers[0].W.astype(np.float64)
    limit = np.sqrt(6.0 / 64)
    assert np.abs(W).max() <= limit * (1 + 1e-7)
    assert np.abs(W).max() > np.sqrt(6.0 / 96)
    assert W.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


def test_prebuilt_layer_keeps_its_weights():
    layer = tc.Dense(3, 2).build(dtype="float64", seed=1)
    layer.W[...] = [[1, 2], [3, 4], [5, 6]]
    model = tc.Sequential([layer, tc.Dense(2, 1)], dtype="float64", seed=0)
    assert_array_equal(model.layers[0].W, [[1, 2], [3, 4], [5, 6]])
    assert np.shares_memory(model.layers[0].W, model.param_buffer)


# --- parameters are views of the model's buffers -------------------------------------

def test_layer_parameters_are_views_of_the_buffers(dtype):
    model = mlp(dtype)
    l0, l1 = model.layers
    for layer in model.layers:
        assert np.shares_memory(layer.W, model.param_buffer)
        assert np.shares_memory(layer.b, model.param_buffer)
        assert np.shares_memory(layer.dW, model.grad_buffer)
        assert np.shares_memory(layer.db, model.grad_buffer)
        assert layer.W.flags.writeable and layer.dW.flags.writeable
    assert l0.W.shape == (4, 8) and l0.b.shape == (8,)
    assert l1.W.shape == (8, 3) and l1.b.shape == (3,)
    # Layout: layer after layer, W (row-major) then b.
    assert_array_equal(model.param_buffer,
                       np.concatenate([l0.W.ravel(), l0.b, l1.W.ravel(), l1.b]))
    assert model.n_params == model.param_buffer.size == 4 * 8 + 8 + 8 * 3 + 3
    # Writing the buffer is seen through the layer, and the other way round.
    model.param_buffer[0] = 0.5
    assert l0.W[0, 0] == np.asarray(0.5, dtype)
    l1.b[2] = -1.25
    assert model.param_buffer[-1] == np.asarray(-1.25, dtype)


def test_writing_layer_W_changes_the_output(dtype, rng):
    model = mlp(dtype, sizes=(4, 8, 3), acts=("relu", "linear"))
    X = rng.normal(size=(5, 4))
    before = model.forward(X).copy()
    l0, l1 = model.layers
    l0.W[...] = 0.0
    l0.b[...] = 1.0          # every hidden unit is relu(1) = 1
    l1.b[...] = [0.5, -0.5, 2.0]
    after = model.forward(X)
    assert not np.allclose(before, after)
    # out = relu(0 X + 1) W1 + b1 = column sums of W1 + b1, for every row.
    expected = l1.W.astype(np.float64).sum(axis=0) + [0.5, -0.5, 2.0]
    assert_allclose(after, np.tile(expected, (5, 1)), **TOL[dtype])
    assert_allclose(model.predict(X), np.tile(expected, (5, 1)), **TOL[dtype])


def test_writes_after_compile_reach_the_compiled_model(dtype, rng):
    # compile() builds a fast path over the same buffers: later writes to
    # layer.W / param_buffer must still be what predict and train_step use.
    model = mlp(dtype, sizes=(4, 8, 3), acts=("relu", "linear"))
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    X = rng.normal(size=(5, 4))
    model.predict(X)
    model.layers[0].W[...] = 0.0
    model.layers[0].b[...] = 2.0                  # hidden = relu(2) = 2 for every row
    model.layers[1].b[...] = 0.0
    expected = 2.0 * model.layers[1].W.astype(np.float64).sum(axis=0)
    assert_allclose(model.predict(X), np.tile(expected, (5, 1)), **TOL[dtype])
    # mse of that constant output against zeros, before the step
    value = model.train_step(X, np.zeros((5, 3)))
    assert value == pytest.approx(np.mean(expected ** 2), rel=TOL[dtype]["rtol"])


def test_compile_again_with_another_loss(rng):
    X, y = classification_data(rng)
    recompiled, fresh = mlp("float64"), mlp("float64")
    recompiled.compile(loss="mse", optimizer=tc.SGD(lr=0.5))
    recompiled.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    fresh.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    assert recompiled.train_step(X, y) == fresh.train_step(X, y)
    assert_array_equal(recompiled.param_buffer, fresh.param_buffer)
    assert set(recompiled.evaluate(X, y)) == {"loss", "accuracy"}


def test_backward_fills_the_gradient_buffer(dtype, rng):
    model = mlp(dtype)
    X = rng.normal(size=(6, 4))
    out = model.forward(X)
    model.grad_buffer[...] = np.nan           # overwritten, never accumulated into
    model.backward(np.ones_like(out))
    l0, l1 = model.layers
    assert np.isfinite(model.grad_buffer).all()
    assert_array_equal(model.grad_buffer,
                       np.concatenate([l0.dW.ravel(), l0.db, l1.dW.ravel(), l1.db]))
    # dL/db of the output layer is the column sum of dL/dZ; for a softmax
    # output with grad_out = 1 everywhere, dZ = p (1 - sum p) = 0.
    assert_allclose(l1.db, 0.0, atol=1e-5)


# --- the optimizer ----------------------------------------------------------------

def sgd_roundings(w, g, lr, dtype):
    """w - lr g in the parameters' precision (lr rounded to it), two ways.

    ``separate``: the product rounded, then the difference (NumPy's way);
    ``fused``: w - lr g computed exactly and rounded once (what a compiler
    that contracts the loop into fused multiply-adds produces).  The exact
    value comes from fractions; float() rounds it correctly to float64 (for
    float32 a second rounding follows, exact unless it lands on a tie).
    """
    lr_r = dtype.type(lr)
    separate = w - lr_r * g
    exact_lr = Fraction(float(lr_r))
    fused = np.array([float(Fraction(wi) - exact_lr * Fraction(gi))
                      for wi, gi in zip(w.tolist(), g.tolist())]).astype(dtype)
    return separate, fused


@pytest.mark.parametrize("lr", [0.1, 0.37, 2.5])
def test_sgd_step_is_w_minus_lr_g_exactly(lr, dtype, rng):
    model = mlp(dtype)
    model.param_buffer[...] = rng.normal(size=model.n_params)
    model.grad_buffer[...] = rng.normal(size=model.n_params)
    w, g = model.param_buffer.copy(), model.grad_buffer.copy()
    tc.SGD(lr=lr).step(model)
    separate, fused = sgd_roundings(w, g, lr, dtype)
    assert separate.dtype == fused.dtype == dtype
    # Each element is exactly one of the two correct roundings of w - lr g
    # (which one depends on whether the build contracts to FMA), nothing else.
    got = model.param_buffer
    assert np.all((got == separate) | (got == fused)), (got - separate, got - fused)
    assert_array_equal(model.grad_buffer, g)              # the gradient is not touched


def test_sgd_step_exact_on_representable_values(dtype):
    # With powers of two every rounding is exact: 1.5 - 0.25 * 2 = 1.0, etc.
    model = tc.Sequential([tc.Dense(1, 2)], dtype=dtype, seed=0)      # 2 + 2 params
    model.param_buffer[...] = [1.5, -2.0, 0.75, 8.0]
    model.grad_buffer[...] = [2.0, -4.0, 0.5, 64.0]
    tc.SGD(lr=0.25).step(model)
    assert_array_equal(model.param_buffer, [1.0, -1.0, 0.625, -8.0])


def test_train_step_returns_the_loss_before_the_update(dtype, rng):
    model = mlp(dtype)
    X, y = classification_data(rng)
    p = model.forward(X).astype(np.float64)
    expected = -np.mean(np.log(p[np.arange(10), y]))     # plain cross-entropy
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.5))
    assert model.train_step(X, y) == pytest.approx(expected, rel=1e-5)
    p_after = model.forward(X).astype(np.float64)
    assert -np.mean(np.log(p_after[np.arange(10), y])) < expected


# --- fit ------------------------------------------------------------------------

class CountingSGD(tc.SGD):
    """SGD that counts its steps (a user-defined optimizer)."""

    def __init__(self, lr):
        super().__init__(lr=lr)
        self.steps = 0

    def step(self, model):
        self.steps += 1
        super().step(model)


def test_fit_history_has_one_loss_per_epoch(rng):
    X, y = classification_data(rng, n=20)
    model = mlp()
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    history = model.fit(X, y, epochs=7, batch_size=6, verbose=0)
    assert len(history.history["loss"]) == 7
    assert len(history.history["accuracy"]) == 7
    assert history.epoch == list(range(7))
    assert all(isinstance(v, float) and np.isfinite(v) for v in history.history["loss"])
    assert all(0.0 <= a <= 1.0 for a in history.history["accuracy"])


def test_fit_regression_history_has_no_accuracy(rng):
    model = mlp(sizes=(4, 5, 2), acts=("tanh", "linear"))
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    history = model.fit(rng.normal(size=(9, 4)), rng.normal(size=(9, 2)), epochs=3,
                        batch_size=4, verbose=0)
    assert list(history.history) == ["loss"]
    assert len(history.history["loss"]) == 3


def test_fit_uses_the_last_partial_batch_counting_optimizer(rng):
    # 10 samples in batches of 4: 4 + 4 + 2, three steps per epoch.
    X, y = classification_data(rng, n=10)
    model = mlp()
    optimizer = CountingSGD(lr=0.1)
    model.compile(loss="cross_entropy", optimizer=optimizer)
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    assert optimizer.steps == 6
    # A custom optimizer's step is also the one train_step uses.
    model.train_step(X, y)
    assert optimizer.steps == 7


@pytest.mark.parametrize("loss,acts", [("cross_entropy", ("tanh", "softmax")),
                                       ("mse", ("tanh", "linear"))])
def test_fit_without_shuffle_equals_manual_train_steps(loss, acts, dtype, rng):
    X, y = classification_data(rng, n=10)
    if loss == "mse":
        y = rng.normal(size=(10, 3))
    fitted, manual, dropped = (mlp(dtype, acts=acts) for _ in range(3))
    for model in (fitted, manual, dropped):
        model.compile(loss=loss, optimizer=tc.SGD(lr=0.3))
    history = fitted.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    values = [manual.train_step(X[rows], y[rows])
              for rows in (slice(0, 4), slice(4, 8), slice(8, 10))]
    for rows in (slice(0, 4), slice(4, 8)):                 # without the last batch
        dropped.train_step(X[rows], y[rows])
    assert_allclose(fitted.param_buffer, manual.param_buffer, **TOL[dtype])
    assert not np.allclose(fitted.param_buffer, dropped.param_buffer, **TOL[dtype])
    # The epoch's loss is the mean over samples of the batch losses before
    # each update: (4 l1 + 4 l2 + 2 l3) / 10.
    expected = (4 * values[0] + 4 * values[1] + 2 * values[2]) / 10
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["labels", "one_hot", "binary"])
def test_fit_accuracy_counts_predictions_before_each_update(kind, rng):
    # With shuffle=False the batches are X[0:4], X[4:8], X[8:10]; the epoch's
    # accuracy counts the predictions each batch got before its update.
    X = rng.normal(size=(10, 4))
    if kind == "binary":
        acts, loss, y = ("tanh", "sigmoid"), "binary_cross_entropy", rng.integers(0, 2, (10, 3))
    else:
        acts, loss, y = ("tanh", "softmax"), "cross_entropy", rng.integers(0, 3, 10)
        if kind == "one_hot":
            y = np.eye(3)[y]
    fitted, manual = mlp("float64", acts=acts), mlp("float64", acts=acts)
    for model in (fitted, manual):
        model.compile(loss=loss, optimizer=tc.SGD(lr=2.0))
    history = fitted.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    correct = 0
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        p = manual.forward(X[rows])
        if kind == "binary":
            correct += np.count_nonzero((p >= 0.5) == (y[rows] >= 0.5))
        else:
            labels = y[rows] if kind == "labels" else y[rows].argmax(axis=1)
            correct += np.count_nonzero(p.argmax(axis=1) == labels)
        manual.train_step(X[rows], y[rows])
    n_predictions = 30 if kind == "binary" else 10      # per unit for BCE, per row for CE
    assert history.history["accuracy"][0] == pytest.approx(correct / n_predictions)


class MyMSE(tc.losses.MSE):
    """A user's subclass of a built-in loss (same formulas)."""


class PlainSGD(tc.SGD):
    """A user's subclass of SGD (same update)."""


@pytest.mark.parametrize("loss,acts,target", [
    ("mse", ("relu", "linear"), "regression"),
    ("cross_entropy", ("tanh", "softmax"), "labels"),
    ("binary_cross_entropy", ("leaky_relu", "sigmoid"), "binary"),
])
def test_user_subclasses_train_like_the_builtins(loss, acts, target, dtype, rng):
    # A subclassed loss or optimizer takes the per-layer path instead of the
    # compiled one; both must train the same way.
    X = rng.normal(size=(11, 4))
    y = {"regression": rng.normal(size=(11, 3)), "labels": rng.integers(0, 3, 11),
         "binary": rng.integers(0, 2, (11, 3)).astype(float)}[target]
    builtin, sub_optimizer = mlp(dtype, acts=acts), mlp(dtype, acts=acts)
    builtin.compile(loss=loss, optimizer=tc.SGD(lr=0.3))
    sub_optimizer.compile(loss=loss, optimizer=PlainSGD(lr=0.3))
    models = [builtin, sub_optimizer]
    if loss == "mse":
        sub_loss = mlp(dtype, acts=acts)
        sub_loss.compile(loss=MyMSE(), optimizer=tc.SGD(lr=0.3))
        models.append(sub_loss)
    values = [m.train_step(X, y) for m in models]
    histories = [m.fit(X, y, epochs=3, batch_size=4, verbose=0).history for m in models]
    for other, value, history in zip(models[1:], values[1:], histories[1:]):
        assert value == pytest.approx(values[0], **{"rel": TOL[dtype]["rtol"]})
        assert_allclose(other.param_buffer, builtin.param_buffer, **TOL[dtype])
        for name in histories[0]:
            assert_allclose(history[name], histories[0][name], **TOL[dtype])
        assert other.evaluate(X, y) == pytest.approx(builtin.evaluate(X, y),
                                                     rel=TOL[dtype]["rtol"])


def test_fit_verbose_0_prints_nothing(capsys, rng):
    X, y = classification_data(rng)
    model = mlp()
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    model.fit(X, y, epochs=3, batch_size=4, verbose=0)
    model.evaluate(X, y)
    model.predict(X)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("verbose", [1, 2])
def test_fit_verbose_prints_each_epoch(verbose, capsys, rng):
    X, y = classification_data(rng)
    model = mlp()
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    history = model.fit(X, y, epochs=3, batch_size=4, verbose=verbose)
    # The format is free (a line or a progress bar per epoch); it names each
    # epoch and shows the last epoch's loss.
    out = capsys.readouterr().out
    assert "loss" in out
    assert all(f"{epoch}/3" in out for epoch in (1, 2, 3))
    assert f"{history.history['loss'][-1]:.4f}" in out


def test_fit_default_verbose_prints(capsys, rng):
    X, y = classification_data(rng)
    model = mlp()
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    model.fit(X, y, epochs=2, batch_size=4)
    out = capsys.readouterr().out
    assert "1/2" in out and "2/2" in out


# --- predict and evaluate ------------------------------------------------------------

def test_predict_equals_forward(dtype, rng):
    model = mlp(dtype)
    X = rng.normal(size=(13, 4))
    expected = model.forward(X).copy()
    out = model.predict(X)
    assert out.dtype == dtype and out.shape == (13, 3)
    assert_array_equal(out, expected)
    # In chunks of 5 rows (5 + 5 + 3), and after compile (the compiled plan).
    assert_allclose(model.predict(X, batch_size=5), expected, **TOL[dtype])
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert_allclose(model.predict(X), expected, **TOL[dtype])
    assert_allclose(model.predict(X, batch_size=5), expected, **TOL[dtype])
    # predict does not change the parameters.
    buffer = model.param_buffer.copy()
    model.predict(X)
    assert_array_equal(model.param_buffer, buffer)


def test_evaluate_cross_entropy(dtype, rng):
    model = mlp(dtype)
    X, y = classification_data(rng, n=25)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    p = model.forward(X)
    result = model.evaluate(X, y, batch_size=7)
    assert set(result) == {"loss", "accuracy"}
    assert result["loss"] == pytest.approx(
        tc.losses.get("cross_entropy").value(p, y), rel=1e-5)
    p64 = p.astype(np.float64)
    assert result["loss"] == pytest.approx(-np.mean(np.log(p64[np.arange(25), y])), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(p64.argmax(axis=1) == y))
    # One-hot rows give the same numbers as labels.
    one_hot = np.eye(3)[y]
    assert model.evaluate(X, one_hot) == pytest.approx(result, rel=1e-6)


def test_evaluate_binary_cross_entropy_and_mse(rng):
    model = tc.Sequential([tc.Dense(3, 4, activation="tanh"),
                           tc.Dense(4, 2, activation="sigmoid")], dtype="float64", seed=0)
    X = rng.normal(size=(11, 3))
    t = rng.integers(0, 2, size=(11, 2)).astype(np.float64)
    p = model.forward(X)
    model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=0.1))
    result = model.evaluate(X, t)
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert result["loss"] == pytest.approx(bce, rel=1e-10)
    # One prediction per output unit: p >= 0.5 against t.
    assert result["accuracy"] == pytest.approx(np.mean((p >= 0.5) == (t >= 0.5)))
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    result = model.evaluate(X, t)
    assert set(result) == {"loss"}
    assert result["loss"] == pytest.approx(np.mean((p - t) ** 2), rel=1e-10)


# --- learning ---------------------------------------------------------------------

def test_learns_xor():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0])
    model = tc.Sequential([tc.Dense(2, 8, activation="tanh"),
                           tc.Dense(8, 1, activation="sigmoid")], seed=0)
    model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=0.5))
    history = model.fit(X, y, epochs=2000, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < 0.05 < history.history["loss"][0]
    assert_array_equal((model.predict(X).ravel() > 0.5).astype(int), y)
    assert model.evaluate(X, y)["accuracy"] == 1.0


def test_learns_xor_with_softmax_and_one_hot_rows():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.eye(2)[[0, 1, 1, 0]]
    model = tc.Sequential([tc.Dense(2, 8, activation="relu"),
                           tc.Dense(8, 2, activation="softmax")], seed=1)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.5))
    model.fit(X, y, epochs=1500, batch_size=4, verbose=0)
    assert_array_equal(model.predict(X).argmax(axis=1), [0, 1, 1, 0])


def test_learns_spirals():
    X, y = tc.datasets.make_spirals(300, n_classes=3, seed=0)
    X_test, y_test = tc.datasets.make_spirals(300, n_classes=3, seed=1)
    model = tc.Sequential([tc.Dense(2, 64, activation="relu"),
                           tc.Dense(64, 64, activation="relu"),
                           tc.Dense(64, 3, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.5))
    before = model.evaluate(X, y)["accuracy"]
    history = model.fit(X, y, epochs=200, batch_size=32, verbose=0)
    assert before < 0.6                       # chance is 1/3: the model did learn
    assert history.history["loss"][-1] < history.history["loss"][0] / 5
    assert model.evaluate(X, y)["accuracy"] >= 0.95
    assert np.mean(model.predict(X_test).argmax(axis=1) == y_test) >= 0.85


# --- input layouts and dtypes -------------------------------------------------------

def layouts(X):
    """Equal arrays in other memory layouts (and a read-only one)."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    reversed_rows = X[::-1].copy()
    read_only = X.copy()
    read_only.flags.writeable = False
    tall = np.zeros((2 * X.shape[0], X.shape[1]), dtype=X.dtype)
    tall[::2] = X
    return {
        "fortran": np.asfortranarray(X),
        "strided-columns": wide[:, ::2],
        "strided-rows": tall[::2],
        "negative-strides": reversed_rows[::-1],
        "read-only": read_only,
    }


LAYOUTS = ["fortran", "strided-columns", "strided-rows", "negative-strides", "read-only"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_and_read_only_inputs(layout, dtype, rng):
    X, y = classification_data(rng, n=10)
    X = X.astype(dtype)
    other = layouts(X)[layout]
    assert np.array_equal(other, X)
    assert not other.flags.c_contiguous or not other.flags.writeable
    y_other = layouts(y.reshape(-1, 1))[layout][:, 0] if layout != "fortran" else y
    if layout == "read-only":
        y_other = y.copy()
        y_other.flags.writeable = False
    reference_model, model = mlp(dtype), mlp(dtype)
    assert_array_equal(model.forward(other), reference_model.forward(X))
    assert_array_equal(model.predict(other), reference_model.predict(X))
    for m in (reference_model, model):
        m.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    assert model.train_step(other, y_other) == reference_model.train_step(X, y)
    assert_array_equal(model.param_buffer, reference_model.param_buffer)
    h1 = model.fit(other, y_other, epochs=2, batch_size=3, verbose=0)
    h2 = reference_model.fit(X, y, epochs=2, batch_size=3, verbose=0)
    assert h1.history == h2.history
    assert_array_equal(model.param_buffer, reference_model.param_buffer)
    assert model.evaluate(other, y_other) == reference_model.evaluate(X, y)
    # The caller's arrays are left as they were.
    assert np.array_equal(other, X)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_regression_targets(layout, rng):
    X = rng.normal(size=(8, 4))
    t = rng.normal(size=(8, 3))
    t_other = layouts(t)[layout]
    a = mlp("float64", acts=("tanh", "linear"))
    b = mlp("float64", acts=("tanh", "linear"))
    for m in (a, b):
        m.compile(loss="mse", optimizer=tc.SGD(lr=0.2))
    assert a.train_step(layouts(X)[layout], t_other) == b.train_step(X, t)
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_other_float_dtype_is_converted(rng):
    X, y = classification_data(rng)
    model32 = mlp("float32")
    assert model32.forward(X).dtype == np.float32                  # float64 in
    assert_array_equal(model32.forward(X), model32.forward(X.astype(np.float32)))
    model64 = mlp("float64")
    assert model64.forward(X.astype(np.float32)).dtype == np.float64
    assert_array_equal(model64.forward(X.astype(np.float32)),
                       model64.forward(X.astype(np.float32).astype(np.float64)))


@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.int64, np.uint16, bool])
def test_int_and_bool_inputs_are_converted(int_dtype, dtype, rng):
    X_int = rng.integers(0, 2 if int_dtype is bool else 5, size=(6, 4)).astype(int_dtype)
    X_float = X_int.astype(dtype)
    y = np.array([0, 1, 2, 0, 1, 2])
    a, b = mlp(dtype), mlp(dtype)
    out = a.forward(X_int)
    assert out.dtype == dtype
    assert_array_equal(out, b.forward(X_float))
    assert_array_equal(a.predict(X_int), b.predict(X_float))
    for m in (a, b):
        m.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    assert a.train_step(X_int, y) == b.train_step(X_float, y)
    assert_array_equal(a.param_buffer, b.param_buffer)
    # Python lists of ints work too.
    assert_array_equal(a.predict(X_int.astype(int).tolist()), b.predict(X_float))


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 0, 1, 2], dtype=np.int32),
                                    np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8),
                                    np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]),
                                    [0, 1, 2, 0, 1, 2]], ids=["int32", "uint8", "float", "list"])
def test_label_dtypes_are_converted(labels, rng):
    X = rng.normal(size=(6, 4))
    a, b = mlp("float64"), mlp("float64")
    for m in (a, b):
        m.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.2))
    assert a.train_step(X, labels) == b.train_step(X, np.array([0, 1, 2, 0, 1, 2]))
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_non_native_byte_order_train_step(dtype, rng):
    # '>f8' has the same NumPy type number as '<f8': a fast path that only
    # compares type numbers would read the swapped bytes as native ones.
    swapped = dtype.newbyteorder(">" if np.little_endian else "<")
    X = rng.normal(size=(5, 4)).astype(dtype)
    t = rng.normal(size=(5, 3)).astype(dtype)
    a = mlp(dtype, acts=("tanh", "linear"))
    b = mlp(dtype, acts=("tanh", "linear"))
    for m in (a, b):
        m.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    assert a.train_step(X.astype(swapped), t.astype(swapped)) == b.train_step(X, t)
    assert_array_equal(a.param_buffer, b.param_buffer)
    assert a.fit(X.astype(swapped), t.astype(swapped), epochs=2, batch_size=2,
                 verbose=0).history == b.fit(X, t, epochs=2, batch_size=2, verbose=0).history
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_non_native_byte_order_labels(rng):
    X = rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 2, 1, 0])
    a, b = mlp("float64"), mlp("float64")
    for m in (a, b):
        m.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert a.train_step(X, y.astype(">i8" if np.little_endian else "<i8")) == b.train_step(X, y)
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_non_native_byte_order_forward_and_predict(rng):
    X = rng.normal(size=(5, 4))
    a = mlp("float64")
    swapped = X.astype(">f8")
    assert_array_equal(a.forward(swapped), a.forward(X))
    a.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert_array_equal(a.predict(swapped), a.predict(X))
