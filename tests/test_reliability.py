"""Reliability: determinism, threads, leaks, numerics at the edges, interrupts.

The figures these tests measure are recorded in docs/reliability.md.  The
default run uses modest sizes; the issue's full sizes are behind
``@pytest.mark.slow`` (``-m slow``).
"""
from __future__ import annotations

import gc
import math
import os
import resource
import threading
import time
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tinycore as tc

MiB = 1 << 20


def _spiral_model(dtype, seed=0, optimizer=None):
    model = tc.Sequential([tc.Dense(2, 32, activation="relu"),
                           tc.Dense(32, 32, activation="tanh"),
                           tc.Dense(32, 3, activation="softmax")], dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=optimizer or tc.SGD(lr=0.3))
    return model


def _spirals(n=300):
    return tc.datasets.make_spirals(n, n_classes=3, noise=0.15, seed=0)


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

def _fit_weights(dtype, seed=0, epochs=4, optimizer=None):
    X, y = _spirals()
    model = _spiral_model(dtype, seed, optimizer)
    model.fit(X, y, epochs=epochs, batch_size=16, verbose=0)
    return model.param_buffer.copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_weights_bit_for_bit(dtype, threads, blas_threads):
    blas_threads(threads)
    first, second = _fit_weights(dtype), _fit_weights(dtype)
    assert_array_equal(first, second)
    assert not np.array_equal(first, _fit_weights(dtype, seed=1))   # the seed matters


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_fit_is_deterministic(dtype):
    assert_array_equal(_fit_weights(dtype, optimizer=tc.Adam(lr=0.01)),
                       _fit_weights(dtype, optimizer=tc.Adam(lr=0.01)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_thread_count_does_not_change_results(dtype, blas_threads):
    """Measured: one BLAS thread against two (see docs/reliability.md).

    The matrices here are small enough that OpenBLAS runs them on one thread
    whatever the limit, and the bias sums have a fixed row order, so the
    weights agree bit for bit.
    """
    blas_threads(1)
    one = _fit_weights(dtype)
    blas_threads(2)
    two = _fit_weights(dtype)
    assert_array_equal(one, two)


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

def _big_problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(256, 64))
    y = rng.integers(0, 10, 256)
    return X, y


def _big_model(optimizer="sgd", seed=0):
    model = tc.Sequential([tc.Dense(64, 256, activation="relu"),
                           tc.Dense(256, 256, activation="relu"),
                           tc.Dense(256, 10, activation="softmax")], dtype="float64", seed=seed)
    model.compile(loss="cross_entropy", optimizer=tc.optimizers.get(optimizer)
                  if optimizer != "sgd" else tc.SGD(lr=0.05))
    return model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_models_in_two_threads_equal_sequential_runs(optimizer):
    X, y = _spirals()
    sequential = []
    for seed in (0, 1):
        model = _spiral_model("float32", seed, tc.optimizers.get(optimizer))
        model.fit(X, y, epochs=3, batch_size=8, verbose=0)
        sequential.append(model.param_buffer.copy())
    models = [_spiral_model("float32", seed, tc.optimizers.get(optimizer)) for seed in (0, 1)]
    barrier, errors = threading.Barrier(2), []

    def train(model):
        try:
            barrier.wait()
            model.fit(X, y, epochs=3, batch_size=8, verbose=0)
        except BaseException as exc:      # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for model, expected in zip(models, sequential):
        assert_array_equal(model.param_buffer, expected)


def _wide_problem():
    """Shapes whose products go to BLAS (past the small-product crossover)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(65536, 4)), rng.integers(0, 2, 65536)


def _wide_model():
    model = tc.Sequential([tc.Dense(4, 64, activation="relu"),
                           tc.Dense(64, 2, activation="softmax")], dtype="float64", seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.01))
    return model


# Bug 8 (docs/reliability.md): OpenBLAS (SciPy's 0.3.30) mixes up the products
# of threads that run different GEMM variants at once on its worker threads.
# Seen with more than two BLAS threads, which on a 2-core machine means more
# threads than cores: then each product waits on the library's spinning
# workers, and this test takes about 40 s, hence slow.  Without the lock it
# failed in 4 of 5 runs (5 of the 20 models differed); the lock itself is
# tested directly, deterministically and quickly, in tests/test_blas.py.
@pytest.mark.slow
def test_models_trained_at_once_on_four_blas_threads_equal_one_trained_alone(blas_threads):
    blas_threads(4)
    X, y = _wide_problem()

    def train(model, barrier=None):
        for _ in range(5):
            if barrier is not None:
                barrier.wait()         # line the threads up on the same step
            model.train_step(X, y)

    alone = _wide_model()
    train(alone)
    models = [_wide_model() for _ in range(4)]
    barrier = threading.Barrier(len(models))
    threads = [threading.Thread(target=train, args=(m, barrier)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for model in models:
        assert_array_equal(model.param_buffer, alone.param_buffer)


def test_one_model_from_two_threads_raises_and_is_not_corrupted():
    """SGD: the whole step runs inside the plan's busy guard."""
    X, y = _big_problem()
    model = _big_model("sgd")
    done, successes, busy, other = threading.Event(), [0, 0], [], []

    def worker(index, deadline):
        while time.perf_counter() < deadline and not done.is_set():
            try:
                model.train_step(X, y)
                successes[index] += 1
                if successes[index] >= 15:
                    done.set()
            except RuntimeError as exc:
                busy.append(str(exc))
                time.sleep(0.0005)    # let the other thread run (and finish its step)
            except BaseException as exc:
                other.append(exc)
                return

    deadline = time.perf_counter() + 10.0
    threads = [threading.Thread(target=worker, args=(i, deadline)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not other
    assert busy, "two threads never met inside the model"
    assert all("another thread" in message for message in busy)
    reference = _big_model("sgd")
    for _ in range(sum(successes)):
        reference.train_step(X, y)
    assert_array_equal(model.param_buffer, reference.param_buffer)
    # And the model is not left locked: it trains and predicts afterwards.
    model.train_step(X, y)
    assert np.isfinite(model.predict(X)).all()


class _SlowFirstStepAdam(tc.Adam):
    """Adam whose first update waits: a long (nogil) optimizer update, made
    deterministic, so that another thread can call the model meanwhile."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered, self.release = threading.Event(), threading.Event()

    def _update(self, params, grads):
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        super()._update(params, grads)


# Bug 7, found by this test and fixed in model.py while this file was written
# (a per-model lock around train_step/fit/predict): for any optimizer but
# plain SGD, optimizer.step() ran after the plan had released its busy flag,
# so a second thread's step was accepted and mixed gradients into the update.
# (The plan now takes the built-in rules' steps itself; an optimizer with its
# own _update, as here, still steps after it.)
def test_one_model_from_two_threads_non_sgd_optimizer_raises():
    X, y = _big_problem()
    model = tc.Sequential([tc.Dense(64, 10, activation="softmax")], dtype="float64", seed=0)
    optimizer = _SlowFirstStepAdam(lr=0.01)
    model.compile(loss="cross_entropy", optimizer=optimizer)
    first = threading.Thread(target=model.train_step, args=(X, y))
    first.start()
    try:
        assert optimizer.entered.wait(10)
        # The first thread is inside its update: the model is in use.
        with pytest.raises(RuntimeError, match="another thread"):
            model.train_step(X[:8], y[:8])
    finally:
        optimizer.release.set()
        first.join()


# ---------------------------------------------------------------------------
# leaks
# ---------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _measure(work, n: int, warmup: int) -> tuple[int, int]:
    """(RSS growth, tracemalloc growth) in bytes over ``n`` calls each, after
    ``warmup`` calls.

    Two separate passes: tracemalloc's own tables live in the process's
    memory, so RSS is measured with tracemalloc off.
    """
    for i in range(warmup):
        work(i)
    gc.collect()
    rss_before = _rss()
    for i in range(n):
        work(i)
    gc.collect()
    rss_growth = _rss() - rss_before
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            work(i)
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    return rss_growth, traced_growth


def _train_step_growth(n):
    X, y = _spirals(64)
    model = _spiral_model("float32")
    return _measure(lambda i: model.train_step(X[(i % 4) * 16:(i % 4 + 1) * 16],
                                               y[(i % 4) * 16:(i % 4 + 1) * 16]), n, 2000)


def _cycle_growth(m, folder):
    X, y = _spirals(64)
    path = os.path.join(folder, "cycle.safetensors")
    state = {"model": _spiral_model("float32", optimizer=tc.Adam(lr=0.01))}

    def cycle(i):
        model = state["model"]
        model.fit(X, y, epochs=1, batch_size=16, verbose=0)
        model.save(path, include_optimizer=True)
        state["model"] = tc.load(path)

    return _measure(cycle, m, 20)


def _report(name, rss, traced, request):
    line = f"{name}: RSS {rss / MiB:+.3f} MiB, tracemalloc {traced / MiB:+.3f} MiB"
    request.config.stash.setdefault(_FIGURES, []).append(line)
    print(line)


_FIGURES = pytest.StashKey[list]()

# Under AddressSanitizer (scripts/sanitize.sh) freed memory sits in ASan's
# quarantine, so RSS and tracemalloc (with PYTHONMALLOC=malloc) measure the
# sanitizer, not tinycore.
_no_asan = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                              reason="memory growth is not meaningful under ASan")


@_no_asan
def test_train_step_does_not_leak(request):
    rss, traced = _train_step_growth(20_000)
    _report("20,000 train_step", rss, traced, request)
    assert rss < MiB and traced < MiB


@_no_asan
def test_fit_save_load_cycles_do_not_leak(request, tmp_path):
    rss, traced = _cycle_growth(100, str(tmp_path))
    _report("100 fit/save/load", rss, traced, request)
    assert rss < MiB and traced < MiB


@_no_asan
@pytest.mark.slow
def test_train_step_does_not_leak_100k(request):
    rss, traced = _train_step_growth(100_000)
    _report("100,000 train_step", rss, traced, request)
    assert rss < MiB and traced < MiB


@_no_asan
@pytest.mark.slow
def test_fit_save_load_cycles_do_not_leak_1000(request, tmp_path):
    rss, traced = _cycle_growth(1_000, str(tmp_path))
    _report("1,000 fit/save/load", rss, traced, request)
    assert rss < MiB and traced < MiB


# ---------------------------------------------------------------------------
# numerics at the edges
# ---------------------------------------------------------------------------

EDGE = np.array([-1e4, -710.0, -100.0, -1.0, 0.0, 1.0, 100.0, 710.0, 1e4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_tanh_softmax_at_1e4(dtype):
    z = EDGE.astype(dtype)
    s, t = tc.activations.sigmoid(z), tc.activations.tanh(z)
    assert np.isfinite(s).all() and np.isfinite(t).all()
    assert s[0] == 0.0 and s[-1] == 1.0 and s[4] == 0.5
    assert t[0] == -1.0 and t[-1] == 1.0 and t[4] == 0.0
    exact = 1 / (1 + np.exp(-np.float64(1.0)))
    assert abs(s[5] - exact) <= 4 * np.finfo(dtype).eps
    for grad in (tc.activations.sigmoid_grad(z), tc.activations.tanh_grad(z)):
        assert np.isfinite(grad).all() and grad[0] == 0.0 and grad[-1] == 0.0
    p = tc.activations.softmax(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=dtype))
    assert np.isfinite(p).all()
    assert_array_equal(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=4 * np.finfo(dtype).eps)
    g = tc.activations.softmax_grad(np.array([1e4, -1e4], dtype=dtype),
                                    np.array([1.0, -1.0], dtype=dtype))
    assert np.isfinite(g).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_at_probabilities_0_and_1(dtype):
    pred = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    # Exactly right: no loss; exactly wrong: the log is clamped at -100.
    bce = tc.losses.get("binary_cross_entropy")
    assert bce.value(pred, pred) == 0.0
    assert bce.value(pred, 1 - pred) == pytest.approx(100.0)
    assert np.isfinite(bce.grad(pred, 1 - pred)).all()
    assert np.isfinite(bce.grad(pred, pred)).all()
    ce = tc.losses.get("cross_entropy")
    assert ce.value(pred, [1, 0]) == 0.0
    assert ce.value(pred, [0, 1]) == pytest.approx(100.0)
    assert np.isfinite(ce.grad(pred, [0, 1])).all()
    assert np.isfinite(ce.grad(pred, np.eye(2)[[0, 1]])).all()
    for name in ("mse", "sse", "mae"):
        loss = tc.losses.get(name)
        big = np.array([[1e4, -1e4]], dtype=dtype)
        value, grad = loss.value(big, -big), loss.grad(big, -big)
        assert math.isfinite(value) and np.isfinite(grad).all()
    assert tc.losses.get("mse").value(np.array([[1e4]], dtype), np.array([[-1e4]], dtype)) \
        == 4e8


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head,loss,y", [("softmax", "cross_entropy", [0, 1]),
                                        ("sigmoid", "binary_cross_entropy", [[0.0], [1.0]])])
def test_fused_losses_train_on_logits_of_1e4(dtype, head, loss, y):
    n_out = 2 if head == "softmax" else 1
    model = tc.Sequential([tc.Dense(1, n_out, activation=head)], dtype=dtype, seed=0)
    model.compile(loss=loss, optimizer=tc.SGD(lr=1e-9))
    model.layers[0].W[...] = np.linspace(-1, 1, n_out) if n_out > 1 else -1.0
    X = np.array([[1e4], [1e4]])           # logits of -1e4 and 1e4: confidently wrong
    value = model.train_step(X, y, check_finite=True)
    assert math.isfinite(value) and value > 1000
    assert np.isfinite(model.param_buffer).all()


def test_float32_training_matches_float64():
    X, y = _spirals(120)
    models = {}
    for dtype in ("float32", "float64"):
        model = tc.Sequential([tc.Dense(2, 16, activation="tanh"),
                               tc.Dense(16, 3, activation="softmax")], dtype=dtype, seed=0)
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
        model.fit(X, y, epochs=3, batch_size=20, verbose=0)
        models[dtype] = model
    # 18 steps on the same initial weights (drawn in float64, then cast)
    # and the same shuffles: float32 rounding only, about 1e-7 per step.
    np.testing.assert_allclose(models["float32"].param_buffer,
                               models["float64"].param_buffer, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(models["float32"].predict(X), models["float64"].predict(X),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# interrupts
# ---------------------------------------------------------------------------

class _InterruptAt(tc.callbacks.Callback):
    def __init__(self, step):
        self.step, self.count = step, 0

    def on_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count == self.step:
            raise KeyboardInterrupt


class _StopAt(_InterruptAt):
    def on_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count == self.step:
            self.model.stop_training = True


class _Snapshot(tc.callbacks.Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.param_buffer.copy()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_keyboard_interrupt_leaves_a_consistent_model_and_checkpoint(tmp_path, optimizer):
    X, y = _spirals(96)                     # 6 batches of 16 per epoch
    stop_after = 6 + 6 + 3                  # in the middle of the third epoch
    checkpoint = tmp_path / "ckpt-{epoch}.safetensors"

    model = _spiral_model("float32", optimizer=tc.optimizers.get(optimizer))
    snapshot = _Snapshot()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=5, batch_size=16, verbose=0,
                  callbacks=[snapshot, tc.callbacks.ModelCheckpoint(checkpoint),
                             _InterruptAt(stop_after)])

    reference = _spiral_model("float32", optimizer=tc.optimizers.get(optimizer))
    reference.fit(X, y, epochs=5, batch_size=16, verbose=0, callbacks=[_StopAt(stop_after)])
    assert_array_equal(model.param_buffer, reference.param_buffer)
    assert model.optimizer.iterations == stop_after

    # The checkpoint of the last finished epoch is intact and loadable.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-1.safetensors", "ckpt-2.safetensors"]          # no temporary left
    restored = tc.load(tmp_path / "ckpt-2.safetensors")
    assert_array_equal(restored.param_buffer, snapshot.weights[1])
    assert restored.optimizer.iterations == 12

    # The interrupted model is not left locked and keeps training.
    model.train_step(X[:16], y[:16])
    assert np.isfinite(model.param_buffer).all()
