"""A small model's step in two halves of the batch, with and without the helper thread.

The plan takes a step of a small network (every product on the calling
thread: in the small-product kernel, or a BLAS call that OpenBLAS keeps to
one thread) in two halves of the batch's rows, each through the forward and
backward passes with its own gradient sums, which are then added for the
update.  With two CPUs and two BLAS threads allowed, the second half may run
on a helper thread: the arithmetic is the same, so the model trains to the
same bits with the helper or without it.  The halves' gradient sums are
added at the end, so they agree with the whole batch's (the per-layer path)
to rounding.  A float32 model with products for the BLAS's threads takes
its batch whole, each such product in two chunks of C's columns, in
tinycore's tiles (where they fuse multiply-adds): the same bits as on one
BLAS thread.  Otherwise (float64), such a model with few parameters is
taken in the same halves on two BLAS threads, each half's products on one
of them.
"""
import os
import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_plan import CASES, _targets      # the same losses and target kinds

import tinycore as tc
from tinycore import _simd

_plan = _simd.load("_plan")

# 64 x (32*48 + 48*40 + 40*8) = 241,664 multiply-adds: past the split's
# crossover, every product on the calling thread (all in the small-product
# kernel but the last layer's forward one, 8 columns wide: a BLAS call
# small enough that OpenBLAS keeps it on the calling thread).
SIZES = (32, 48, 40, 8)
BATCH = 64

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="a split step needs two CPUs")


def _model(acts, dtype, loss, seed=3):
    layers = [tc.Dense(n_in, n_out, activation=act)
              for n_in, n_out, act in zip(SIZES, SIZES[1:], acts)]
    model = tc.Sequential(layers, dtype=dtype, seed=seed)
    # A summed loss (sse) grows with the batch: a step of the same size.
    lr = 0.05 / BATCH if loss == "sse" else 0.05
    model.compile(loss=loss, optimizer=tc.SGD(lr=lr))
    return model


def _train(model, X, y, steps):
    return [model.train_step(X, y) for _ in range(steps)]


def _assert_matches_the_per_layer_path(make_model, X, y, batch, grad_rtol):
    # float64, against the per-layer path (no plan): the backpropagation
    # that tests/test_gradcheck.py checks by finite differences.
    split, reference = make_model(), make_model()
    reference._plan = None
    assert split._plan.splits(batch)
    for _ in range(3):
        assert split.train_step(X, y) == pytest.approx(reference.train_step(X, y), rel=1e-13)
    assert_allclose(split.grad_buffer, reference.grad_buffer, rtol=grad_rtol, atol=1e-13)
    assert_allclose(split.param_buffer, reference.param_buffer, rtol=1e-12, atol=1e-14)


def _assert_trained_at_once_as_alone(make_model, X, y, steps):
    # Two models (seeds 1 and 2) trained in two threads at once must end
    # where each ends trained alone.
    alone = [make_model(seed) for seed in (1, 2)]
    for model in alone:
        _train(model, X, y, steps)
    together = [make_model(seed) for seed in (1, 2)]
    threads = [threading.Thread(target=_train, args=(model, X, y, steps))
               for model in together]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together):
        assert_array_equal(b.param_buffer, a.param_buffer)


@pytest.fixture
def split_threads(blas_threads):
    """Two BLAS threads (a split is allowed); back to the original after."""
    if not any(pool.get("internal_api") == "openblas" for pool in tc._config.blas_info()):
        pytest.skip("only OpenBLAS's thread count can be asked: no split elsewhere")
    blas_threads(2)
    return blas_threads


def test_halves_depend_on_the_model_and_batch_not_the_threads(split_threads):
    model = _model(CASES[0][0], "float32", "cross_entropy")
    assert model._plan.splits(BATCH) and model._plan.helper_allowed()
    assert not model._plan.splits(8)            # too few rows
    split_threads(1)
    assert model._plan.splits(BATCH)            # the same arithmetic ...
    assert not model._plan.helper_allowed()     # ... on this thread alone
    tiny = tc.Sequential([tc.Dense(4, 3, activation="softmax")], seed=0)
    tiny.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert not tiny._plan.splits(BATCH)         # too little work to pay


def test_a_large_model_is_never_split_in_halves(split_threads):
    # Its products are for BLAS's threads, and its 2.1 MB of parameters are
    # past what a split step with such products takes (in float32 they may
    # go by columns instead: below).
    model = tc.Sequential([tc.Dense(1024, 512, activation="relu"),
                           tc.Dense(512, 10, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert not model._plan.splits(256)


@pytest.mark.parametrize("batch", [BATCH, 63, 17])
@pytest.mark.parametrize("acts,loss,kind", CASES)
def test_helper_thread_changes_no_bit(acts, loss, kind, batch, dtype, rng, split_threads):
    X = rng.normal(size=(batch, SIZES[0])).astype(dtype)
    y = _targets(kind, rng, batch, SIZES[-1])
    helped, alone = _model(acts, dtype, loss), _model(acts, dtype, loss)
    assert helped._plan.splits(batch) == (batch * 3776 >= 131072)
    helped_losses = _train(helped, X, y, 10)
    helped_predictions = helped.predict(X)
    split_threads(1)
    alone_losses = _train(alone, X, y, 10)
    assert helped_losses == alone_losses
    assert_array_equal(helped.param_buffer, alone.param_buffer)
    assert_array_equal(helped.grad_buffer, alone.grad_buffer)
    assert_array_equal(alone.predict(X), helped_predictions)


@pytest.mark.parametrize("threads", [1, 2])
def test_predict_takes_the_halves_of_a_training_step(threads, dtype, rng, split_threads):
    # The last layer's forward product (8 columns) goes to BLAS, whose
    # rounding of a row may depend on how many rows the call has (OpenBLAS's
    # Haswell kernels do: rows 24-31 of 64 differ from the same rows of a
    # call of 32).  So predict must take a batch in the halves a training
    # step takes, with the helper or without it, for its predictions not to
    # change with the threads.  Each half alone (32 rows) is too small to
    # split: it is one call per product, as the half is in the split batch.
    split_threads(threads)
    model = _model(CASES[0][0], dtype, "cross_entropy")
    X = rng.normal(size=(BATCH, SIZES[0])).astype(dtype)
    assert model._plan.splits(BATCH) and not model._plan.splits(BATCH // 2)
    halves = np.vstack([model.predict(X[:BATCH // 2]), model.predict(X[BATCH // 2:])])
    # On two threads the helper may claim the second half in time or not (the
    # caller then runs it itself): repeated, so that both ways are met.
    for _ in range(20):
        assert_array_equal(model.predict(X), halves)


def test_the_plan_measures_both_ways_and_uses_the_helper(split_threads, rng):
    model = _model(CASES[0][0], "float32", "cross_entropy")
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    assert model._plan.helper_costs() == (0.0, 0.0)
    posted = _plan._helper_counts()[0]
    _train(model, X, y, 200)
    alone_ns, helper_ns = model._plan.helper_costs()
    assert alone_ns > 0 and helper_ns > 0
    # The first step goes to the helper, and whichever way is the faster, so
    # do at least the tries at steps 16, 48 and 112: two phases a step.
    assert _plan._helper_counts()[0] - posted >= 2 * 4


def test_the_plans_first_step_with_the_helper_is_not_a_sample(split_threads, rng):
    # That step first touches the second half's gradients (and may start
    # the thread): T3's took 3-4 times a later one's.  Taken as the
    # helper's first mean, it sent the next hundred steps alone.
    model = _model(CASES[0][0], "float32", "cross_entropy")
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    posted = _plan._helper_counts()[0]
    deadline = time.perf_counter() + 1.0
    while _plan._helper_counts()[0] == posted and time.perf_counter() < deadline:
        model.train_step(X, y)      # (a step that finds it asleep runs alone)
    assert _plan._helper_counts()[0] > posted
    assert model._plan.helper_costs()[1] == 0.0
    # Still unmeasured, the helper is taken again, and that step counts.
    while model._plan.helper_costs()[1] == 0.0 and time.perf_counter() < deadline:
        model.train_step(X, y)
    assert model._plan.helper_costs()[1] > 0.0


def _tries_of_the_slower_way(plan, alone_ns, helper_ns, steps):
    # The steps (counted from 1) on which the plan, its running means held
    # at these, would take the slower way.
    helper_slower = helper_ns > alone_ns
    return [step for step in range(1, steps + 1)
            if plan._choose_helper(BATCH, alone_ns, helper_ns) == helper_slower]


def test_the_tries_of_the_slower_way_thin_out_while_the_choice_holds():
    plan = _model(CASES[0][0], "float32", "cross_entropy")._plan
    # With the helper: 16 steps to the first try alone, then twice as many
    # each time, up to 256.
    assert _tries_of_the_slower_way(plan, 50e3, 30e3, 1000) == [16, 48, 112, 240, 496, 752]
    # Alone: a try of the helper every 16 steps.
    assert _tries_of_the_slower_way(plan, 30e3, 50e3, 100) == [16, 32, 48, 64, 80, 96]
    # With the helper again: the tries start 16 steps apart.
    assert _tries_of_the_slower_way(plan, 50e3, 30e3, 40) == [16]


def test_a_step_that_finds_the_helper_asleep_runs_alone_and_wakes_it(split_threads, rng):
    # Woken, the helper takes tens of microseconds to run, longer than the
    # caller's half of a small step: that step is taken alone, the next
    # with the helper.
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    _train(_model(CASES[0][0], "float32", "cross_entropy"), X, y, 3)   # it runs
    time.sleep(0.05)           # it spins for 0.2 ms without a phase, then sleeps
    model = _model(CASES[0][0], "float32", "cross_entropy")
    expected = _model(CASES[0][0], "float32", "cross_entropy")
    posted = _plan._helper_counts()[0]
    model.train_step(X, y)     # a new plan tries the helper first
    assert _plan._helper_counts()[0] == posted
    assert model._plan.helper_costs()[1] == 0.0      # nothing measured with it
    # Until it runs: the wake takes a while, and every step that finds it
    # still asleep runs alone (on a 2-core EPYC VM, 15 to 24 of these ~20 us
    # steps in 4 of 60 processes; 10 steps were too few for 7 of 80).
    steps = 1
    deadline = time.perf_counter() + 1.0
    while _plan._helper_counts()[0] == posted and time.perf_counter() < deadline:
        model.train_step(X, y)
        steps += 1
    assert _plan._helper_counts()[0] > posted
    _train(expected, X, y, steps)
    assert_array_equal(model.param_buffer, expected.param_buffer)


def test_split_step_matches_reference_gradient(split_threads, rng):
    X = rng.normal(size=(BATCH, SIZES[0]))
    y = rng.integers(0, SIZES[-1], BATCH)
    _assert_matches_the_per_layer_path(
        lambda: _model(CASES[0][0], "float64", "cross_entropy"), X, y, BATCH, grad_rtol=1e-11)


def test_diverged_split_step_leaves_parameters_unchanged(split_threads, rng):
    model = _model(("linear", "linear", "softmax"), "float32", "cross_entropy")
    assert model._plan.splits(BATCH)
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    X[40] = 3e38                  # finite, but the forward pass overflows (row
                                  # 40 is in the helper's half)
    y = rng.integers(0, SIZES[-1], BATCH)
    before = model.param_buffer.copy()
    with pytest.raises(tc.TrainingDivergedError) as caught:
        model.train_step(X, y)
    assert_array_equal(model.param_buffer, before)
    # Traced to the first layer, whose output overflowed in the helper's
    # half (its own workspace): the trace reads that half's rows too.
    assert caught.value.layer == 0


def _second_half_rows():
    # The rows of the batch that the split step's second half takes.
    return slice(BATCH // 2, BATCH)


def test_a_split_fit_counts_both_halves_correct_predictions(split_threads, rng):
    # Every prediction of the first half right, every one of the second
    # wrong: 0.5, which reading either half's rows twice would not give.
    model = _model(("tanh", "relu", "softmax"), "float32", "cross_entropy")
    assert model._plan.splits(BATCH)
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = model.predict(X).argmax(axis=1)
    y[_second_half_rows()] = (y[_second_half_rows()] + 1) % SIZES[-1]
    history = model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    assert history.history["accuracy"] == [0.5]


def test_a_split_step_tracks_both_halves_saturated_units(split_threads, rng):
    # The first layer's sigmoids saturated for the second half's rows only
    # (inputs 1,000 times larger): a fraction of about one half, measured on
    # the same batch by the per-layer path.
    model = _model(("sigmoid", "relu", "softmax"), "float64", "cross_entropy")
    assert model._plan.splits(BATCH)
    X = rng.normal(size=(BATCH, SIZES[0]))
    X[_second_half_rows()] *= 1000.0
    y = rng.integers(0, SIZES[-1], BATCH)
    A = model.layers[0].forward(X)
    expected = np.mean((A < 0.01) | (A > 0.99))
    assert 0.4 < expected < 0.6
    history = model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0,
                        track_gradients=True)
    assert history.history["saturated_fraction"][0][0] == pytest.approx(expected)


def test_two_models_in_two_threads_train_as_they_would_alone(split_threads, rng):
    # One of them holds the helper at a time; the other takes both halves
    # on its own thread meanwhile.
    X = rng.normal(size=(BATCH, SIZES[0]))
    y = rng.integers(0, SIZES[-1], BATCH)
    _assert_trained_at_once_as_alone(
        lambda seed: _model(CASES[0][0], "float64", "cross_entropy", seed=seed), X, y, 200)


def test_split_step_in_a_forked_child(split_threads, rng):
    """A child forked after the helper ran has no helper thread: its split
    steps must start a new one, not wait for the parent's."""
    model = _model(CASES[0][0], "float64", "cross_entropy")
    X = rng.normal(size=(BATCH, SIZES[0]))
    y = rng.integers(0, SIZES[-1], BATCH)
    _train(model, X, y, 5)                       # the helper is running now
    expected = _model(CASES[0][0], "float64", "cross_entropy")
    _train(expected, X, y, 25)
    pid = os.fork()
    if pid == 0:                                 # the child
        code = 1
        try:
            _train(model, X, y, 20)
            # The counts start again at the fork: at most 2 phases a step.
            posted = _plan._helper_counts()[0]
            same = np.array_equal(model.param_buffer, expected.param_buffer)
            code = 0 if same and posted <= 40 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- a model with products for the BLAS's threads ------------------------------
#
# 784-128-10 at batch 128: products such as a half's 64 x 784 x 128 forward
# one (6.4 M multiply-adds), which OpenBLAS would split across its threads,
# and 0.41 MB of float32 parameters (0.81 MB of float64), within the 1 MB
# that such a split takes.  Its step is taken in halves on two BLAS threads,
# each half's products on one (in float32 by columns instead, where the
# tiles fuse multiply-adds: below).

BLAS_SIZES = (784, 128, 10)
BLAS_BATCH = 128


def _blas_sized_model(dtype, seed=3):
    layers = [tc.Dense(784, 128, activation="relu"),
              tc.Dense(128, 10, activation="softmax")]
    model = tc.Sequential(layers, dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.05))
    return model


def _blas_sized_batch(rng, dtype):
    X = rng.normal(size=(BLAS_BATCH, BLAS_SIZES[0])).astype(dtype)
    return X, rng.integers(0, BLAS_SIZES[-1], BLAS_BATCH)


def _openblas_threads():
    return [pool["num_threads"] for pool in tc._config.blas_info()
            if pool.get("internal_api") == "openblas"]


def _prefer(model, batch, helper):
    # Set the plan's running means so that its next step on ``batch`` rows
    # prefers the helper (or going alone): the tries of the other way still
    # come.
    model._plan._choose_helper(batch, *((2e6, 1e6) if helper else (1e6, 2e6)))


def _train_choosing(model, X, y, steps, helper):
    # Each step preferring the helper (or going alone).
    losses = []
    for _ in range(steps):
        _prefer(model, len(X), helper)
        losses.append(model.train_step(X, y))
    return losses


def test_a_blas_sized_model_is_split_on_two_blas_threads_only(split_threads):
    model = _blas_sized_model("float64")
    assert model._plan.splits(BLAS_BATCH) and model._plan.helper_allowed()
    split_threads(1)
    assert not model._plan.splits(BLAS_BATCH)      # the whole batch, on this thread
    split_threads(2)
    # float32 goes by columns instead where the tiles fuse multiply-adds.
    float32 = _blas_sized_model("float32")._plan
    fused = _simd.load("_blas")._tile_fuses()
    assert float32.splits(BLAS_BATCH) == (not fused)
    assert float32.splits_columns(BLAS_BATCH) == fused


def test_a_blas_sized_step_changes_no_bit_with_the_helper(dtype, rng, split_threads):
    X, y = _blas_sized_batch(rng, dtype)
    helped, alone = _blas_sized_model(dtype), _blas_sized_model(dtype)
    if not helped._plan.splits(BLAS_BATCH):
        pytest.skip("float32 goes by columns here (tests below)")
    # Two phases a step with the helper.  The hook counts as a step too, so
    # the tries of the other way come twice as often: in 40 steps, at most
    # 4 alone while the helper holds the choice (8, 24, 56...), and 5 with
    # the helper while going alone (every 8).
    posted = _plan._helper_counts()[0]
    helped_losses = _train_choosing(helped, X, y, 40, helper=True)
    assert _plan._helper_counts()[0] - posted >= 2 * (40 - 4)
    posted = _plan._helper_counts()[0]
    alone_losses = _train_choosing(alone, X, y, 40, helper=False)
    assert _plan._helper_counts()[0] - posted <= 2 * 5
    assert helped_losses == alone_losses
    assert_array_equal(helped.param_buffer, alone.param_buffer)
    assert_array_equal(helped.grad_buffer, alone.grad_buffer)
    assert_array_equal(alone.predict(X), helped.predict(X))
    assert _openblas_threads() == [2]        # the BLAS has its two threads back


def test_a_blas_sized_split_step_matches_reference_gradient(split_threads, rng):
    X, y = _blas_sized_batch(rng, np.float64)
    _assert_matches_the_per_layer_path(
        lambda: _blas_sized_model("float64"), X, y, BLAS_BATCH, grad_rtol=1e-10)


def test_two_blas_sized_models_in_two_threads_train_as_they_would_alone(split_threads, rng):
    # While one holds the BLAS to one thread, the other must still see two
    # (and split its step the same way), and must not make a threaded
    # product: either would change its bits.
    X, y = _blas_sized_batch(rng, np.float32)
    _assert_trained_at_once_as_alone(
        lambda seed: _blas_sized_model("float32", seed=seed), X, y, 60)
    assert _openblas_threads() == [2]


# -- a float32 model with products for the BLAS's threads: by C's columns ---------
#
# 512-512-256-10 at batch 64: products such as the first forward one (64 x
# 512 x 512, 16.8 M multiply-adds) that OpenBLAS would split across its
# threads, and 1.6 MB of float32 parameters.  On two BLAS threads, with
# tiles that fuse multiply-adds, its step takes the batch whole, each such
# product in two chunks of C's columns, the second on the helper thread, the
# BLAS held to one thread meanwhile (so does the 784-128-10 model above, in
# float32).  Every element of C is the same sum whichever chunk or thread
# computes it, so the model trains to the same bits as on one BLAS thread
# (the whole product in tiles).

COLUMN_SIZES = (512, 512, 256, 10)
COLUMN_BATCH = 64


def _column_model(dtype="float32", seed=3, optimizer="sgd"):
    acts = ("tanh", "tanh", "softmax")
    layers = [tc.Dense(n_in, n_out, activation=act)
              for n_in, n_out, act in zip(COLUMN_SIZES, COLUMN_SIZES[1:], acts)]
    model = tc.Sequential(layers, dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy",
                  optimizer=tc.SGD(lr=0.05) if optimizer == "sgd" else tc.Adam(lr=1e-3))
    return model


def _column_batch(rng, dtype="float32"):
    X = rng.normal(size=(COLUMN_BATCH, COLUMN_SIZES[0])).astype(dtype)
    return X, rng.integers(0, COLUMN_SIZES[-1], COLUMN_BATCH)


@pytest.fixture
def column_split(split_threads):
    """Two BLAS threads, where the tiles fuse multiply-adds (else no column
    split: the BLAS keeps such products)."""
    if not _simd.load("_blas")._tile_fuses():
        pytest.skip("products by C's columns need tiles with fused multiply-adds")
    return split_threads


def test_a_large_float32_model_splits_its_products_by_columns(column_split):
    model = _column_model()
    assert model._plan.splits_columns(COLUMN_BATCH) and not model._plan.splits(COLUMN_BATCH)
    column_split(1)
    assert not model._plan.splits_columns(COLUMN_BATCH)    # the whole product in tiles
    column_split(2)
    assert not _column_model("float64")._plan.splits_columns(COLUMN_BATCH)
    assert _blas_sized_model("float32")._plan.splits_columns(BLAS_BATCH)   # any size


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_columns_change_no_bit_with_the_helper_or_the_threads(optimizer, column_split, rng):
    # The helper also takes half of each layer's update past 16,384
    # parameters, elementwise: Adam's state too must end the same.
    X, y = _column_batch(rng)
    helped, alone, one_thread = (_column_model(optimizer=optimizer) for _ in range(3))
    posted = _plan._helper_counts()[0]
    helped_losses = _train_choosing(helped, X, y, 12, helper=True)
    # Five products a step past the BLAS's one-thread size, each in two
    # chunks; at most one step of 12 alone (the try at step 8).
    assert _plan._helper_counts()[0] - posted >= 5 * (12 - 1)
    posted = _plan._helper_counts()[0]
    alone_losses = _train_choosing(alone, X, y, 12, helper=False)
    assert _plan._helper_counts()[0] - posted <= 5 * 2
    assert _openblas_threads() == [2]        # the BLAS has its two threads back
    helped_predictions = helped.predict(X)
    column_split(1)
    one_thread_losses = _train(one_thread, X, y, 12)
    assert helped_losses == alone_losses == one_thread_losses
    assert_array_equal(helped.param_buffer, alone.param_buffer)
    assert_array_equal(helped.param_buffer, one_thread.param_buffer)
    assert_array_equal(helped.grad_buffer, one_thread.grad_buffer)
    assert_array_equal(one_thread.predict(X), helped_predictions)


def _reference_gradients(model, X, y):
    # One step's dW and db of a tanh-tanh-softmax network, backpropagated in
    # float64 NumPy from the model's current parameters.
    Ws = [layer.W.astype(np.float64) for layer in model.layers]
    bs = [layer.b.astype(np.float64) for layer in model.layers]
    activations = [X.astype(np.float64)]
    for W, b in zip(Ws[:-1], bs[:-1]):
        activations.append(np.tanh(activations[-1] @ W + b))
    Z = activations[-1] @ Ws[-1] + bs[-1]
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dZ = P
    dZ[np.arange(len(y)), y] -= 1.0
    dZ /= len(y)
    grads = []
    for layer in range(len(Ws) - 1, -1, -1):
        grads.append((activations[layer].T @ dZ, dZ.sum(axis=0)))
        if layer > 0:
            dZ = (dZ @ Ws[layer].T) * (1.0 - activations[layer] ** 2)
    return grads[::-1]


def test_a_column_split_step_matches_a_float64_reference(column_split, rng):
    X, y = _column_batch(rng)
    model = _column_model()
    expected = _reference_gradients(model, X, y)
    model.train_step(X, y)
    for layer, (dW, db) in zip(model.layers, expected):
        assert_allclose(layer.dW, dW, rtol=1e-3, atol=1e-5 * np.abs(dW).max())
        assert_allclose(layer.db, db, rtol=1e-3, atol=1e-5 * np.abs(db).max())


def test_two_column_split_models_in_two_threads_train_as_they_would_alone(column_split, rng):
    # One holds the helper; the other takes both chunks of each product on
    # its own thread, in the same tiles.
    X, y = _column_batch(rng)
    _assert_trained_at_once_as_alone(lambda seed: _column_model(seed=seed), X, y, 20)
    assert _openblas_threads() == [2]


# -- the guard of fit (check_finite) in a split step -----------------------------
#
# A step whose loss is finite but one of whose gradients is not: a huge
# input (or unit) whose weights out are 0 leaves the forward pass alone and
# overflows its dW.  The guard checks every gradient before any update: in
# halves as the halves' sums are added (each half of the parameters by the
# thread that adds it), by columns in two chunks on the two threads.  The
# first layer's dW opens the parameter buffer (the first chunk), the last
# layer's closes it (the second).

def _guarded_model(sizes, seed=3):
    acts = ["relu"] * (len(sizes) - 2) + ["linear"]
    layers = [tc.Dense(n_in, n_out, activation=act)
              for n_in, n_out, act in zip(sizes, sizes[1:], acts)]
    model = tc.Sequential(layers, dtype="float32", seed=seed)
    model.compile(loss="mse", optimizer=tc.SGD(lr=1e-9))
    return model


def _overflowing_gradient(model, batch, rng, layer):
    """A batch, with ``model``'s weights set so that the step's loss is
    finite and only ``layer``'s dW (the first or the last layer) is not."""
    sizes = [model.layers[0].in_features] + [lay.out_features for lay in model.layers]
    X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = np.full((batch, sizes[-1]), 1e6, np.float32)      # far: large gradients
    if layer == 0:
        X[:, 0] = 3e38                    # finite, with no weight out of it
        model.layers[0].W[0] = 0
    else:
        below = model.layers[layer - 1]   # unit 0 of the layer below is huge
        below.W[:, 0] = 0
        below.b[0] = 3e38
        model.layers[layer].W[0] = 0
    return X, y


@pytest.mark.parametrize("helper", [True, False])
@pytest.mark.parametrize("layer", ["first", "last"])
@pytest.mark.parametrize("kind", ["halves", "columns"])
def test_the_guard_finds_a_gradient_that_overflows_in_either_chunk(kind, layer, helper,
                                                                   split_threads, rng):
    if kind == "columns" and not _simd.load("_blas")._tile_fuses():
        pytest.skip("products by C's columns need tiles with fused multiply-adds")
    sizes, batch = (SIZES, BATCH) if kind == "halves" else (COLUMN_SIZES, COLUMN_BATCH)
    model = _guarded_model(sizes)
    splits = model._plan.splits if kind == "halves" else model._plan.splits_columns
    assert splits(batch)
    index = 0 if layer == "first" else len(model.layers) - 1
    X, y = _overflowing_gradient(model, batch, rng, index)
    before = model.param_buffer.copy()
    helped = _plan._helper_counts()[1]
    steps = 0
    # Three steps at least; with the helper, until it has taken its chunks
    # in one.  Asleep when the test starts, it is woken by the first step,
    # but it was seen to miss all of the next two in 1 run of 7, and all of
    # 200 steps in 1 of 25: a time limit, not a count.
    deadline = time.monotonic() + 5.0
    while steps < 3 or (helper and _plan._helper_counts()[1] == helped):
        assert time.monotonic() < deadline, f"the helper took no chunk in {steps} steps"
        _prefer(model, batch, helper)
        with pytest.raises(tc.TrainingDivergedError) as info:
            model.train_step(X, y, check_finite=True)
        assert np.isfinite(info.value.loss) and info.value.layer == index
        assert_array_equal(model.param_buffer, before)
        steps += 1
    grads = model.grad_buffer
    assert not np.isfinite(grads).all()
    # The same step unguarded takes the update, overflow and all (as
    # documented): the guard, not the step, kept the weights.
    _prefer(model, batch, helper)
    model.train_step(X, y)
    assert not np.isfinite(model.param_buffer).all()
