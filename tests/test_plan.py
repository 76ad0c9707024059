"""The compiled training plan against the per-layer path it replaces."""
import os
import threading
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tinycore as tc
from tinycore import losses

CASES = [
    (("relu", "tanh", "softmax"), "cross_entropy", "labels"),
    (("sigmoid", "leaky_relu", "softmax"), "cross_entropy", "rows"),
    (("tanh", "relu", "sigmoid"), "binary_cross_entropy", "binary"),
    (("tanh", "relu", "linear"), "mse", "real"),
    (("sigmoid", "step", "tanh"), "sse", "real"),
    (("tanh", "linear", "relu"), "mae", "real"),
]
SIZES = (5, 7, 6, 4)


def _model(acts, dtype, loss, seed=1, lr=0.1):
    layers = [tc.Dense(SIZES[i], SIZES[i + 1], activation=a, bias=(i != 1))
              for i, a in enumerate(acts)]
    model = tc.Sequential(layers, dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer=tc.SGD(lr=lr))
    return model


def _targets(kind, rng, n, n_out=SIZES[-1]):
    """n targets of a CASES kind for n_out outputs."""
    if kind == "labels":
        return rng.integers(0, n_out, n)
    if kind == "rows":
        return rng.dirichlet(np.ones(n_out), n)
    if kind == "binary":
        return rng.integers(0, 2, (n, n_out)).astype(float)
    return rng.normal(size=(n, n_out))


def _per_layer(model):
    model._plan = None          # force the per-layer path of the same model
    return model


@pytest.mark.parametrize("acts,loss,kind", CASES)
def test_train_step_matches_per_layer_path_bit_for_bit(acts, loss, kind, dtype, rng):
    X = rng.normal(size=(9, SIZES[0]))
    y = _targets(kind, rng, 9)
    fast, slow = _model(acts, dtype, loss), _per_layer(_model(acts, dtype, loss))
    for _ in range(5):
        assert fast.train_step(X, y) == slow.train_step(X, y)
    assert_array_equal(fast.param_buffer, slow.param_buffer)
    assert_array_equal(fast.grad_buffer, slow.grad_buffer)


@pytest.mark.parametrize("acts,loss,kind", CASES)
def test_fit_matches_per_layer_path(acts, loss, kind, dtype, rng):
    # 23 samples in batches of 5: four full batches and the remainder of 3.
    X = rng.normal(size=(23, SIZES[0]))
    y = _targets(kind, rng, 23)
    fast, slow = _model(acts, dtype, loss), _per_layer(_model(acts, dtype, loss))
    h_fast = fast.fit(X, y, epochs=3, batch_size=5, verbose=0)
    h_slow = slow.fit(X, y, epochs=3, batch_size=5, verbose=0)
    assert h_fast.history == h_slow.history
    assert_array_equal(fast.param_buffer, slow.param_buffer)
    assert_array_equal(fast.predict(X, batch_size=4), slow.predict(X, batch_size=4))


def test_custom_loss_takes_the_per_layer_path(rng):
    class HalfMSE(losses.MSE):
        name = "half_mse"

        def _value_sum(self, pred, target):
            return 0.5 * super()._value_sum(pred, target)

        def _grad(self, scale, pred, target, out):
            super()._grad(0.5 * scale, pred, target, out)

    X, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    half = _model(("tanh", "relu", "linear"), "float64", HalfMSE())
    full = _model(("tanh", "relu", "linear"), "float64", "mse", lr=0.05)
    assert half._plan is None
    # Half the loss at lr 0.1 moves the weights as the full loss at lr 0.05.
    assert half.train_step(X, y) == pytest.approx(0.5 * full.train_step(X, y), rel=1e-12)
    np.testing.assert_allclose(half.param_buffer, full.param_buffer, rtol=1e-12)


def test_other_optimizer_is_applied_after_the_plan(rng):
    class HalfSGD(tc.Optimizer):
        def _update(self, params, grads):
            params -= 0.05 * grads

    X, y = rng.normal(size=(6, 5)), rng.integers(0, 4, 6)
    custom = _model(("relu", "tanh", "softmax"), "float64", "cross_entropy")
    custom.compile(loss="cross_entropy", optimizer=HalfSGD())
    sgd = _model(("relu", "tanh", "softmax"), "float64", "cross_entropy", lr=0.05)
    for _ in range(3):
        assert custom.train_step(X, y) == sgd.train_step(X, y)
    np.testing.assert_allclose(custom.param_buffer, sgd.param_buffer, rtol=1e-13)


def test_learning_rate_change_takes_effect(rng):
    X, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    a = _model(("tanh", "relu", "linear"), "float64", "mse", lr=0.1)
    b = _model(("tanh", "relu", "linear"), "float64", "mse", lr=0.1)
    a.optimizer.lr = 0.02
    b.compile(loss="mse", optimizer=tc.SGD(lr=0.02))
    a.train_step(X, y)
    b.train_step(X, y)
    assert_array_equal(a.param_buffer, b.param_buffer)


@pytest.mark.parametrize("make_optimizer", [lambda: tc.SGD(lr=0.01),
                                            lambda: tc.Adam(clipnorm=1.0)],
                         ids=["sgd", "adam"])
def test_steady_state_train_step_allocates_nothing(make_optimizer, rng):
    model = tc.Sequential([tc.Dense(8, 16, activation="relu"),
                           tc.Dense(16, 3, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=make_optimizer())
    X = rng.normal(size=(32, 8)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    for _ in range(10):                                  # warm-up: workspace made
        model.train_step(X, y)
    tracemalloc.start()
    try:
        # Both snapshots inside the traced run: the optimizer's step counter
        # is then one traced int object in each (it replaces, not grows).
        for _ in range(300):
            model.train_step(X, y)
        before = tracemalloc.take_snapshot()
        for _ in range(10_000):
            model.train_step(X, y)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    package = os.path.dirname(tc.__file__)
    grown = [stat for stat in after.compare_to(before, "lineno")
             if stat.size_diff > 0
             and any(frame.filename.startswith(package) for frame in stat.traceback)]
    assert grown == []


def test_workspaces_are_cached_per_batch_size(rng):
    model = _model(("relu", "tanh", "softmax"), "float32", "cross_entropy")
    X, y = rng.normal(size=(10, 5)), rng.integers(0, 4, 10)
    model.train_step(X, y)
    size_one = model._plan.workspace_bytes()
    model.train_step(X, y)
    assert model._plan.workspace_bytes() == size_one
    model.train_step(X[:3], y[:3])
    assert model._plan.workspace_bytes() > size_one


def test_a_model_refuses_a_second_thread_while_busy(rng):
    # A big enough step that the two threads overlap; the second one must get
    # a clear error, never a half-updated model.
    model = tc.Sequential([tc.Dense(256, 512, activation="relu"),
                           tc.Dense(512, 10, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.01))
    X = rng.normal(size=(512, 256)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    errors, start = [], threading.Barrier(2)

    def train():
        start.wait()
        for _ in range(20):
            try:
                model.train_step(X, y)
            except RuntimeError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=train) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all("another thread" in message for message in errors)
    assert np.isfinite(model.param_buffer).all()


def test_two_models_in_two_threads_match_sequential_runs(rng):
    X = rng.normal(size=(64, 5))
    y = rng.integers(0, 4, 64)

    def trained():
        return _model(("relu", "tanh", "softmax"), "float64", "cross_entropy")

    alone = [trained(), trained()]
    for model in alone:
        model.fit(X, y, epochs=5, batch_size=8, verbose=0)
    together = [trained(), trained()]
    threads = [threading.Thread(target=m.fit, args=(X, y),
                                kwargs=dict(epochs=5, batch_size=8, verbose=0))
               for m in together]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together):
        assert_array_equal(a.param_buffer, b.param_buffer)


def test_train_step_converts_what_is_not_in_the_fast_form(rng):
    X = rng.normal(size=(6, 5))
    y = rng.integers(0, 4, 6)
    a = _model(("relu", "tanh", "softmax"), "float32", "cross_entropy")
    b = _model(("relu", "tanh", "softmax"), "float32", "cross_entropy")
    a.train_step(np.asfortranarray(X), y.astype(np.int32).tolist())
    b.train_step(X.astype(np.float32), y.astype(np.int64))
    assert_array_equal(a.param_buffer, b.param_buffer)


def test_train_step_after_backward_needs_a_new_forward(rng):
    model = _model(("relu", "tanh", "softmax"), "float64", "cross_entropy")
    X, y = rng.normal(size=(4, 5)), rng.integers(0, 4, 4)
    model.forward(X)
    model.train_step(X, y)
    with pytest.raises(RuntimeError, match="call forward before backward"):
        model.backward(np.ones((4, 4)))


def test_fit_peak_memory_is_the_workspaces_and_little_more(rng):
    # 8 MB of data: fit must neither copy it nor keep more than the plan's
    # workspaces (one per batch size) plus small bookkeeping.
    X = rng.normal(size=(5000, 400)).astype(np.float32)
    y = rng.integers(0, 10, 5000)
    model = tc.Sequential([tc.Dense(400, 128, activation="relu"),
                           tc.Dense(128, 10, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.01))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        model.fit(X, y, epochs=2, batch_size=64, verbose=0)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    workspaces = model._plan.workspace_bytes()
    assert workspaces > 0
    assert peak <= workspaces + 1_000_000, (peak, workspaces)
