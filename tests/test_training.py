"""fit's loop: validation, callbacks, progress, restarts, initialisers."""
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tinycore as tc
from tinycore import callbacks as cb
from tinycore import initializers


def _classifier(seed=0, lr=0.2, dtype="float64"):
    model = tc.Sequential([tc.Dense(2, 16, activation="tanh"),
                           tc.Dense(16, 3, activation="softmax")], dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=lr))
    return model


@pytest.fixture
def spirals():
    return tc.datasets.make_spirals(120, n_classes=3, noise=0.1, seed=0)


def test_validation_data_is_evaluated_each_epoch(spirals):
    X, y = spirals
    model = _classifier()
    history = model.fit(X[:90], y[:90], epochs=3, batch_size=16,
                        validation_data=(X[90:], y[90:]), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_loss"]) == 3
    # The last value is the model's own evaluation after training.
    final = model.evaluate(X[90:], y[90:])
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-12)
    assert history.history["val_accuracy"][-1] == final["accuracy"]


def test_validation_split_holds_out_the_last_samples(spirals):
    X, y = spirals
    split, explicit = _classifier(), _classifier()
    h_split = split.fit(X, y, epochs=2, validation_split=0.25, verbose=0)
    h_explicit = explicit.fit(X[:90], y[:90], epochs=2, validation_data=(X[90:], y[90:]),
                              verbose=0)
    assert h_split.history == h_explicit.history
    assert_array_equal(split.param_buffer, explicit.param_buffer)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(validation_split=1.0), ValueError, "validation_split must be in"),
    (dict(validation_split=-0.1), ValueError, "validation_split must be >= 0"),
    (dict(validation_split=0.2, validation_data=([[0, 0]], [0])), ValueError, "not both"),
    (dict(validation_data=[[0, 0]]), TypeError, "validation_data must be a pair"),
    (dict(validation_data=([[0, 0, 0]], [0])), ValueError, r"expects X of shape \(batch, 2\)"),
    (dict(callbacks=[print]), TypeError, "Callback objects"),
    (dict(restarts=0), ValueError, "restarts must be >= 1"),
    (dict(shuffle="yes"), TypeError, "shuffle must be True or False"),
    (dict(verbose=3), ValueError, "verbose must be 0, 1 or 2"),
])
def test_bad_fit_arguments(spirals, kwargs, error, match):
    X, y = spirals
    model = _classifier()
    before = model.param_buffer.copy()
    with pytest.raises(error, match=match):
        model.fit(X, y, epochs=1, **{"verbose": 0, **kwargs})
    assert_array_equal(model.param_buffer, before)


class _Recorder(cb.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_batch_end(self, batch, logs=None):
        self.events.append(f"batch {batch} {logs['size']}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_callback_hooks_run_in_order(spirals):
    X, y = spirals
    recorder = _Recorder()
    _classifier().fit(X[:10], y[:10], epochs=2, batch_size=4, callbacks=[recorder], verbose=0)
    # 10 samples in batches of 4: sizes 4, 4, 2 (the last partial batch is used).
    epoch = ["batch 0 4", "batch 1 4", "batch 2 2"]
    assert recorder.events == (
        ["train_begin", "epoch_begin 0", *epoch, "epoch_end 0 ['accuracy', 'loss']",
         "epoch_begin 1", *epoch, "epoch_end 1 ['accuracy', 'loss']", "train_end"])


def test_stop_training_ends_the_run_after_the_batch(spirals):
    X, y = spirals

    class StopAtBatch(cb.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    model = _classifier()
    reference = _classifier()
    history = model.fit(X, y, epochs=5, batch_size=8, shuffle=False,
                        callbacks=[StopAtBatch()], verbose=0)
    assert history.epoch == [0]
    # Exactly two steps were taken.
    for start in (0, 8):
        reference.train_step(X[start:start + 8], y[start:start + 8])
    assert_array_equal(model.param_buffer, reference.param_buffer)


def test_early_stopping_stops_and_restores_the_best_weights(spirals):
    X, y = spirals
    # A learning rate so large that the validation loss soon gets worse.
    model = _classifier(lr=25.0)
    saved = {}

    class Snapshot(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved[epoch] = (logs["val_loss"], self.model.param_buffer.copy())

    stopper = cb.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(X[:90], y[:90], epochs=50, batch_size=90,
                        validation_data=(X[90:], y[90:]),
                        callbacks=[Snapshot(), stopper], verbose=0)
    losses = history.history["val_loss"]
    assert len(losses) < 50 and stopper.stopped_epoch == len(losses) - 1
    best = int(np.argmin(losses))
    assert stopper.best_epoch == best
    assert len(losses) - 1 - best == stopper.patience + 1     # waited patience + 1 epochs
    assert_array_equal(model.param_buffer, saved[best][1])


def test_early_stopping_needs_its_metric(spirals):
    X, y = spirals
    with pytest.raises(ValueError, match="monitor 'val_loss' is not among"):
        _classifier().fit(X, y, epochs=1, callbacks=[cb.EarlyStopping()], verbose=0)


def test_reduce_lr_on_plateau_multiplies_the_learning_rate(spirals):
    X, y = spirals
    model = _classifier(lr=25.0)
    reducer = cb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=0.0,
                                   min_lr=0.1)
    lrs = []

    class LrLog(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            lrs.append(self.model.optimizer.lr)

    history = model.fit(X, y, epochs=12, batch_size=120, callbacks=[reducer, LrLog()],
                        verbose=0)
    losses = history.history["loss"]
    # Halved after each epoch whose loss was no better than the best so far.
    expected, best, lr = [], np.inf, 25.0
    for loss in losses:
        if loss < best:
            best = loss
        else:
            lr = max(lr * 0.5, 0.1)
        expected.append(lr)
    assert lrs == expected and lrs[-1] < 25.0


def test_callback_arguments_are_checked():
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        cb.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be"):
        cb.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="factor must be < 1"):
        cb.ReduceLROnPlateau(factor=2.0)
    with pytest.raises(TypeError, match="monitor must be a metric name"):
        cb.ModelCheckpoint("x.safetensors", monitor=3)


def test_restarts_keep_the_best_run(spirals):
    X, y = spirals
    model = _classifier(seed=3, lr=0.5)
    history = model.fit(X, y, epochs=3, batch_size=16, restarts=3, verbose=0)
    assert len(history.restart_scores) == 3
    assert history.restart == int(np.argmin(history.restart_scores))
    assert history.history["loss"][-1] == min(history.restart_scores)
    # The model holds the winner's weights: its loss is the winner's, not the last run's.
    manual = _classifier(seed=3, lr=0.5)
    first = manual.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert first.history["loss"][-1] == history.restart_scores[0]


def test_restarts_start_from_different_weights(spirals):
    X, y = spirals
    starts = []

    class FirstWeights(cb.Callback):
        def on_train_begin(self, logs=None):
            starts.append(self.model.param_buffer.copy())

    _classifier().fit(X, y, epochs=1, restarts=3, callbacks=[FirstWeights()], verbose=0)
    assert len(starts) == 3
    assert not np.array_equal(starts[0], starts[1])
    assert not np.array_equal(starts[1], starts[2])


def test_verbose_one_shows_progress_and_two_one_line_per_epoch(spirals, capsys):
    X, y = spirals
    _classifier().fit(X, y, epochs=2, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2 - loss ")
    _classifier().fit(X, y, epochs=2, verbose=1)
    assert "epoch 2/2" in capsys.readouterr().out
    _classifier().fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


# -- initialisers ---------------------------------------------------------------------

@pytest.mark.parametrize("name,low,high,std", [
    # For a (300, 200) matrix: Glorot l = sqrt(6/500) = 0.1095; He l = sqrt(6/300) = 0.1414.
    ("glorot_uniform", -np.sqrt(6 / 500), np.sqrt(6 / 500), np.sqrt(6 / 500) / np.sqrt(3)),
    ("he_uniform", -np.sqrt(6 / 300), np.sqrt(6 / 300), np.sqrt(6 / 300) / np.sqrt(3)),
    ("glorot_normal", None, None, np.sqrt(2 / 500)),
    ("he_normal", None, None, np.sqrt(2 / 300)),
    ("lecun_normal", None, None, np.sqrt(1 / 300)),
    ("normal", None, None, 0.05),
    ("uniform", -0.05, 0.05, 0.05 / np.sqrt(3)),
])
def test_initializer_distributions(name, low, high, std):
    layer = tc.Dense(300, 200, init=name).build(dtype="float64", seed=0)
    W = layer.W
    if low is not None:
        assert W.min() >= low and W.max() <= high
    assert W.std() == pytest.approx(std, rel=0.02)
    assert abs(W.mean()) < 0.01 and np.all(layer.b == 0)


def test_auto_init_picks_he_for_relu_and_glorot_otherwise():
    assert initializers.resolve("auto", "relu") is initializers.he_uniform
    assert initializers.resolve("auto", "leaky_relu") is initializers.he_uniform
    for activation in ("sigmoid", "tanh", "linear", "softmax", "step"):
        assert initializers.resolve("auto", activation) is initializers.glorot_uniform


def test_zeros_and_callable_initializers():
    assert np.all(tc.Dense(3, 4, init="zeros").build(seed=0).W == 0)
    layer = tc.Dense(2, 3, init=lambda shape, rng: np.full(shape, 0.5)).build(seed=0)
    assert np.all(layer.W == 0.5)


def test_same_seed_same_weights_in_both_dtypes():
    a = tc.Dense(5, 4, activation="relu").build(dtype="float64", seed=7)
    b = tc.Dense(5, 4, activation="relu").build(dtype="float32", seed=7)
    assert_array_equal(a.W.astype(np.float32), b.W)


@pytest.mark.parametrize("init,error,match", [
    ("glorot", ValueError, "unknown initializer 'glorot'; expected one of"),
    (3, TypeError, "initializer must be given by name"),
    (lambda shape, rng: np.zeros((1, 1)), ValueError, r"returned shape \(1, 1\)"),
    (lambda shape, rng: np.full(shape, np.nan), ValueError, "NaN or infinity"),
    (lambda shape, rng: "weights", TypeError, "not an array of real numbers"),
])
def test_bad_initializers(init, error, match):
    with pytest.raises(error, match=match):
        tc.Dense(2, 3, init=init).build(seed=0)


# -- track_gradients ------------------------------------------------------------------

def _deep(act, seed=0):
    layers = [tc.Dense(2, 6, activation=act)] + [tc.Dense(6, 6, activation=act)
                                                 for _ in range(3)]
    model = tc.Sequential(layers + [tc.Dense(6, 3, activation="softmax")],
                          dtype="float64", seed=seed)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.3))
    return model


def test_tracked_gradient_norms_are_those_of_backprop(spirals):
    X, y = spirals
    model, manual = _deep("sigmoid"), _deep("sigmoid")
    # One batch per epoch: the epoch's mean is that one step's value.
    history = model.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, verbose=0,
                        track_gradients=True)
    out = manual.forward(X)
    manual.backward(manual.loss.grad(out, y))
    expected = [np.linalg.norm(layer.dW) for layer in manual.layers]
    np.testing.assert_allclose(history.history["grad_norms"][0], expected, rtol=1e-10)
    # Update ratio: lr ||dW|| / ||W|| with W after the step.
    after = [np.linalg.norm(layer.W) for layer in model.layers]
    np.testing.assert_allclose(history.history["update_ratios"][0],
                               0.3 * np.array(expected) / after, rtol=1e-10)
    # The sigmoid chain's first-layer gradient is far below its last's.
    norms = history.history["grad_norms"][0]
    assert norms[0] < norms[3] / 10


def test_saturated_and_dead_fractions(spirals):
    X, y = spirals
    model = tc.Sequential([tc.Dense(2, 4, activation="tanh"),
                           tc.Dense(4, 4, activation="relu"),
                           tc.Dense(4, 3, activation="softmax")], dtype="float64", seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=1e-12))
    # tanh: units 0 and 1 saturated by a huge bias (outputs > 0.99), 2 and 3 not.
    model.layers[0].W[...] = 0.0
    model.layers[0].b[...] = [50.0, -50.0, 0.0, 0.1]
    # ReLU: unit 3 dead (a bias no input can overcome), the others alive.
    model.layers[1].W[...] = 0.1
    model.layers[1].b[...] = [1.0, 1.0, 1.0, -1e3]
    history = model.fit(X, y, epochs=1, batch_size=30, verbose=0, track_gradients=True)
    saturated = history.history["saturated_fraction"][0]
    dead = history.history["dead_fraction"][0]
    assert saturated[0] == pytest.approx(0.5) and np.isnan(saturated[1:]).all()
    assert dead[1] == pytest.approx(0.25) and np.isnan(dead[0]) and np.isnan(dead[2])


def test_update_ratio_with_another_optimizer_is_measured(spirals):
    X, y = spirals

    class HalfSGD(tc.Optimizer):
        lr = 0.15

        def _update(self, params, grads):
            params -= 0.15 * grads

    model, reference = _deep("tanh"), _deep("tanh")
    model.compile(loss="cross_entropy", optimizer=HalfSGD())
    reference.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.15))
    got = model.fit(X, y, epochs=2, batch_size=40, verbose=0, track_gradients=True)
    want = reference.fit(X, y, epochs=2, batch_size=40, verbose=0, track_gradients=True)
    np.testing.assert_allclose(got.history["update_ratios"], want.history["update_ratios"],
                               rtol=1e-6)


def test_track_gradients_needs_a_builtin_loss(spirals):
    X, y = spirals

    class MyMSE(tc.losses.MSE):
        pass

    model = tc.Sequential([tc.Dense(2, 3)], seed=0)
    model.compile(loss=MyMSE())
    with pytest.raises(ValueError, match="track_gradients needs one of tinycore's own"):
        model.fit(X, np.eye(3)[y], epochs=1, verbose=0, track_gradients=True)


# -- divergence ------------------------------------------------------------------------

def _exploding(loss="mse"):
    # Linear regression with a learning rate far above 2 / (largest curvature):
    # every step overshoots more than the last, until float64 overflows.
    model = tc.Sequential([tc.Dense(3, 4, activation="tanh"), tc.Dense(4, 1)],
                          dtype="float64", seed=0)
    model.compile(loss=loss, optimizer=tc.SGD(lr=50.0))
    return model


def _regression_data(rng):
    X = rng.normal(size=(64, 3)) * 100
    return X, X.sum(axis=1) * 1e3


def test_fit_stops_on_divergence_with_the_last_good_weights(rng):
    X, y = _regression_data(rng)
    model = _exploding()
    snapshots = []

    class Snapshot(cb.Callback):
        def on_batch_end(self, batch, logs=None):
            snapshots.append(self.model.param_buffer.copy())

    with pytest.raises(tc.TrainingDivergedError, match=r"in epoch \d+, batch \d+, at layer") as info:
        model.fit(X, y, epochs=500, batch_size=16, callbacks=[Snapshot()], verbose=0)
    error = info.value
    assert error.epoch is not None and error.batch is not None and error.layer in (0, 1)
    assert not np.isfinite(error.loss) or error.layer is not None
    assert np.isfinite(model.param_buffer).all()
    assert_array_equal(model.param_buffer, snapshots[-1])     # the last good step


@pytest.mark.parametrize("custom", [False, True])
def test_train_step_check_finite_leaves_the_weights(rng, custom):
    X, y = _regression_data(rng)

    class MyMSE(tc.losses.MSE):
        pass

    model = _exploding(MyMSE() if custom else "mse")
    assert (model._plan is None) == custom
    for _ in range(200):
        before = model.param_buffer.copy()
        try:
            model.train_step(X, y, check_finite=True)
        except tc.TrainingDivergedError as error:
            assert error.epoch is None and error.layer in (0, 1)
            assert_array_equal(model.param_buffer, before)
            return
    pytest.fail("the learning rate of 50 should have made training diverge")


@pytest.mark.parametrize("custom", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_step_refuses_a_non_finite_loss_without_check_finite(custom, dtype):
    # Finite input and weights whose product overflows in the forward pass:
    # the loss is not finite, and its gradient would write NaN into every weight.
    class MySoftmaxCE(tc.losses.CrossEntropy):
        pass

    model = tc.Sequential([tc.Dense(2, 4, activation="relu"), tc.Dense(4, 3, activation="softmax")],
                          dtype=dtype, seed=0)
    model.compile(loss=MySoftmaxCE() if custom else "cross_entropy", optimizer=tc.SGD(lr=0.1))
    assert (model._plan is None) == custom
    model.layers[0].W[...] = 10.0
    before = model.param_buffer.copy()
    huge = np.finfo(dtype).max / 4                 # 10 * huge overflows
    with pytest.raises(tc.TrainingDivergedError) as info:
        model.train_step([[huge, huge]], [0])
    assert not np.isfinite(info.value.loss) and info.value.layer == 0
    assert_array_equal(model.param_buffer, before)
    assert np.isfinite(model.train_step([[1.0, -1.0]], [0]))     # still trains


def test_nan_traced_to_the_first_layer_with_a_non_finite_output():
    model = tc.Sequential([tc.Dense(2, 2, activation="relu"), tc.Dense(2, 2, activation="relu"),
                           tc.Dense(2, 1)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    model.layers[0].W[...] = 1.0            # layer 0 outputs [2, 2]
    model.layers[1].W[...] = 1e308          # layer 1: 2e308 + 2e308 overflows to inf
    before = model.param_buffer.copy()
    with pytest.raises(tc.TrainingDivergedError) as info:
        model.train_step([[1.0, 1.0]], [[0.0]], check_finite=True)
    assert info.value.layer == 1
    assert_array_equal(model.param_buffer, before)
