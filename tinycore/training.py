"""The training loop behind :meth:`Sequential.fit`: epochs, batches, validation,
callbacks, progress display and restarts.

The work of each batch is one call into the compiled plan; this module only
decides which rows go into which batch and what happens between epochs.
"""
from __future__ import annotations

import copy
import math
import sys
import time

import numpy as np

from tinycore._validation import check_positive_int, check_real
from tinycore.callbacks import Callback

__all__ = ["History", "TrainingDivergedError", "fit"]


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or infinite; the weights were not updated.

    The model keeps the weights of the last good step.  A learning rate that
    is too large is the usual cause: each step overshoots the minimum by more
    than the last, until the numbers overflow.

    Attributes
    ----------
    epoch, batch : int or None
        Where it happened in ``fit`` (counted from 0); None for ``train_step``.
    layer : int
        The layer it was traced to: for a non-finite loss, the first layer
        whose output was not finite; for a non-finite gradient, the layer
        nearest the output that had one.
    loss : float
        The loss of the failed step.
    """

    def __init__(self, layer: int, loss: float, epoch: int | None = None,
                 batch: int | None = None):
        self.layer, self.loss, self.epoch, self.batch = layer, loss, epoch, batch
        where = "" if epoch is None else f"in epoch {epoch}, batch {batch}, "
        super().__init__(
            f"training diverged {where}at layer {layer} (loss {loss}): the loss or a "
            "gradient is NaN or infinite; the weights were left as after the last "
            "good step (try a smaller learning rate)"
        )


class History:
    """What :meth:`Sequential.fit` recorded.

    Attributes
    ----------
    history : dict[str, list[float]]
        One value per epoch for each metric: "loss", "accuracy" (for the
        classification losses), and "val_loss", "val_accuracy" with
        validation data.
    epoch : list[int]
        The epoch numbers, from 0.
    restart : int
        With ``fit(..., restarts=k)``: which restart won (from 0).
    restart_scores : list[float]
        The final score of every restart (val_loss if there was validation
        data, else loss); the lowest won.

    With ``fit(..., track_gradients=True)``, ``history`` also holds, per
    epoch, one list with a value per layer (first layer first) for
    "grad_norms" (mean ||dW||), "update_ratios" (mean ||delta W|| / ||W||),
    "saturated_fraction" (sigmoid and tanh layers: outputs within 0.01 of
    their bounds) and "dead_fraction" (ReLU layers: units inactive on a
    whole batch); NaN where a statistic does not apply.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.restart = 0
        self.restart_scores: list[float] = []

    def _record(self, epoch: int, metrics: dict) -> None:
        self.epoch.append(epoch)
        for name, value in metrics.items():
            # Per-layer metrics (lists) are kept as lists, one per epoch.
            value = list(value) if isinstance(value, list) else float(value)
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={sorted(self.history)})"


# -- arguments --------------------------------------------------------------------


def _split_validation(model, X, y, validation_data, validation_split):
    """Return (X_train, y_train, validation pair or None), all validated."""
    split = check_real(validation_split, "validation_split", low=0.0)
    if split >= 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    if validation_data is not None:
        if split > 0:
            raise ValueError("give validation_data or validation_split, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        return X, y, model._check_data(*validation_data)
    if split == 0:
        return X, y, None
    # As Keras does: the last samples, before any shuffling, are held out.
    n_val = int(math.ceil(split * X.shape[0]))
    if n_val >= X.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves no training "
                         f"sample out of {X.shape[0]}")
    return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])


def _check_callbacks(callbacks) -> list:
    if callbacks is None:
        return []
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be tinycore.callbacks.Callback objects, "
                            f"got {type(callback).__name__}")
    return callbacks


# -- progress display ------------------------------------------------------------


def _format_metrics(metrics: dict) -> str:
    return " - ".join(f"{name} {value:.4f}" for name, value in metrics.items())


class _Progress:
    """verbose=1: a tqdm bar per epoch (a line per epoch without tqdm);
    verbose=2: a line per epoch; verbose=0: nothing."""

    def __init__(self, verbose: int, epochs: int, n_samples: int):
        self.verbose, self.epochs, self.n_samples = verbose, epochs, n_samples
        self.bar = None
        self.started = 0.0
        self.tqdm = None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def start_epoch(self, epoch: int) -> None:
        self.started = time.perf_counter()
        if self.tqdm is not None:
            self.bar = self.tqdm(total=self.n_samples, unit="sample", leave=True,
                                 desc=f"epoch {epoch + 1}/{self.epochs}", file=sys.stdout)

    def batch(self, loss: float, size: int) -> None:
        if self.bar is not None:
            self.bar.update(size)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        seconds = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.set_postfix_str(_format_metrics(metrics), refresh=False)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            rate = self.n_samples / seconds if seconds > 0 else float("inf")
            print(f"epoch {epoch + 1}/{self.epochs} - {_format_metrics(metrics)} - "
                  f"{seconds:.2f}s ({rate:,.0f} samples/s)", file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- the loop -----------------------------------------------------------------------


def _overrides(callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class _GradientTracker:
    """Per-layer gradient statistics, averaged over an epoch's batches.

    The compiled plan adds, after every step and inside the same call, each
    layer's ||dW||, the share of saturated (sigmoid, tanh) or dead (ReLU)
    units and, for plain SGD, the update ratio lr ||dW|| / ||W|| to running
    sums.  For other optimizers the ratio ||delta W|| / ||W|| is measured
    here from a copy of the weights taken before the step, which costs more.
    """

    def __init__(self, model):
        if model._plan is None:
            raise ValueError("track_gradients needs one of tinycore's own losses "
                             f"(the compiled plan); {model.loss!r} is a custom loss")
        self.model = model
        self.plan = model._plan
        self.measure_updates = model._plan_lr() is None
        self.weight_slices = [slice(offset, offset + layer.in_features * layer.out_features)
                              for offset, layer in zip(_offsets(model), model.layers)]
        self.ratio_sums = np.zeros(len(model.layers))
        self.ratio_counts = np.zeros(len(model.layers))
        self.before = None
        self.plan.set_tracking(True)

    def close(self):
        self.plan.set_tracking(False)

    def before_step(self):
        if self.measure_updates:
            self.before = self.model.param_buffer.copy()

    def after_step(self):
        if not self.measure_updates:
            return
        params = self.model.param_buffer
        for index, rows in enumerate(self.weight_slices):
            weight_norm = np.linalg.norm(params[rows])
            if weight_norm > 0:
                self.ratio_sums[index] += np.linalg.norm(params[rows] - self.before[rows]) / weight_norm
                self.ratio_counts[index] += 1

    def epoch_metrics(self) -> dict:
        sums, counts = self.plan.take_tracking()
        if self.measure_updates:
            sums[:, 1], counts[:, 1] = self.ratio_sums, self.ratio_counts
            self.ratio_sums, self.ratio_counts = np.zeros_like(sums[:, 1]), np.zeros_like(sums[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts                     # NaN where never defined
        activations = [layer.activation for layer in self.model.layers]
        saturating = np.array([a in ("sigmoid", "tanh") for a in activations])
        relu = np.array([a == "relu" for a in activations])
        return {
            "grad_norms": means[:, 0].tolist(),
            "update_ratios": means[:, 1].tolist(),
            "saturated_fraction": np.where(saturating, means[:, 2], np.nan).tolist(),
            "dead_fraction": np.where(relu, means[:, 2], np.nan).tolist(),
        }


def _offsets(model) -> list[int]:
    offsets, offset = [], 0
    for layer in model.layers:
        offsets.append(offset)
        offset += layer.n_params
    return offsets


def _train_epoch(model, X, y, order, batch_size, progress, batch_callbacks,
                 tracker, epoch) -> dict:
    loss_fn = model.loss
    loss_sum, n_correct, n_samples = 0.0, 0, X.shape[0]
    measure_updates = tracker is not None and tracker.measure_updates
    for batch, start in enumerate(range(0, n_samples, batch_size)):
        rows = order[start:start + batch_size]
        if measure_updates:
            tracker.before_step()
        try:
            value, correct = model._fit_batch(X, y, rows)
        except TrainingDivergedError as exc:
            raise TrainingDivergedError(exc.layer, exc.loss, epoch, batch) from None
        if measure_updates:
            tracker.after_step()
        loss_sum += value * loss_fn._denominator((len(rows), model.out_features))
        n_correct += correct
        progress.batch(value, len(rows))
        for callback in batch_callbacks:
            callback.on_batch_end(batch, {"loss": value, "size": len(rows)})
        if model.stop_training:
            n_samples = start + len(rows)    # the metrics of the batches run
            break
    metrics = {"loss": loss_sum / loss_fn._denominator((n_samples, model.out_features))}
    if loss_fn.is_classification:
        metrics["accuracy"] = n_correct / _n_predictions(loss_fn, n_samples, model.out_features)
    return metrics


def _n_predictions(loss, n_samples: int, n_outputs: int) -> int:
    # Cross-entropy makes one prediction per row; binary cross-entropy one
    # per output unit.
    return n_samples if loss.name == "cross_entropy" else n_samples * n_outputs


def _epoch_loop(model, callbacks, progress: _Progress, epochs: int, run_epoch,
                agree=None, close=None) -> History:
    """The loop of every fit, local or distributed, around ``run_epoch``.

    It calls the callbacks (around training and each epoch), drives the
    progress display, records the History and stops when a callback sets
    ``model.stop_training``.  ``run_epoch(epoch)`` trains one epoch and returns
    (metrics shown on the progress line, metrics recorded but not shown).
    ``agree(stop)`` turns one process's stop flag into the decision all take
    (a distributed fit stops when any rank asks); ``close()`` runs however the
    loop ends, before the callbacks hear of the end.
    """
    history = History()
    model.stop_training = False
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    try:
        for epoch in range(epochs):
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            progress.start_epoch(epoch)
            metrics, unshown = run_epoch(epoch)
            progress.end_epoch(epoch, metrics)
            metrics.update(unshown)
            history._record(epoch, metrics)
            for callback in callbacks:
                callback.on_epoch_end(epoch, dict(metrics))
            if agree is not None:
                model.stop_training = agree(model.stop_training)
            if model.stop_training:
                break
    finally:
        progress.close()
        if close is not None:
            close()
    for callback in callbacks:
        callback.on_train_end()
    return history


def _run(model, X, y, validation, *, epochs, batch_size, shuffle, callbacks,
         verbose, track_gradients) -> History:
    tracker = _GradientTracker(model) if track_gradients else None
    progress = _Progress(verbose, epochs, X.shape[0])
    batch_callbacks = [cb for cb in callbacks if _overrides(cb, "on_batch_end")]

    def run_epoch(epoch: int) -> tuple[dict, dict]:
        order = (model._rng.permutation(X.shape[0]) if shuffle
                 else np.arange(X.shape[0], dtype=np.int64))
        metrics = _train_epoch(model, X, y, order, batch_size, progress, batch_callbacks,
                               tracker, epoch)
        if validation is not None:
            scores = model.evaluate(*validation)
            metrics.update({f"val_{name}": value for name, value in scores.items()})
        # The gradient statistics go into the History, not onto the progress line.
        return metrics, (tracker.epoch_metrics() if tracker is not None else {})

    return _epoch_loop(model, callbacks, progress, epochs, run_epoch,
                       close=tracker.close if tracker is not None else None)


def _final_score(history: History) -> float:
    scores = history.history.get("val_loss") or history.history["loss"]
    score = scores[-1]
    return score if np.isfinite(score) else math.inf


def fit(model, X, y, *, epochs, batch_size, shuffle, validation_data,
        validation_split, callbacks, verbose, restarts, track_gradients) -> History:
    """Validate the arguments, then train (``restarts`` times); see Sequential.fit."""
    X, y = model._check_data(X, y)
    if y.ndim == 1:
        # The kernels index with the labels every batch, trusting the range
        # checked here: keep a private copy that no callback or other thread
        # can change during training (small: 8 bytes a sample).
        y = y.copy()
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    restarts = check_positive_int(restarts, "restarts")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {type(shuffle).__name__}")
    X, y, validation = _split_validation(model, X, y, validation_data, validation_split)
    callbacks = _check_callbacks(callbacks)
    model._forward_current = False
    run = dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle,
               callbacks=callbacks, verbose=verbose, track_gradients=bool(track_gradients))
    if restarts == 1:
        return _run(model, X, y, validation, **run)
    return _fit_restarts(model, X, y, validation, restarts, run)


def _fit_restarts(model, X, y, validation, restarts: int, run: dict) -> History:
    """Train ``restarts`` copies from different initial weights; keep the best.

    The seeds' remedy for a run that settles in a poor local minimum: the
    first restart starts from the model's current weights, the others from
    weights drawn afresh from the model's generator, each with the optimizer
    as it was before training.
    """
    optimizer = copy.deepcopy(model.optimizer)
    best, best_params, scores = None, None, []
    for restart in range(restarts):
        if restart > 0:
            for layer in model.layers:
                layer.init_params(model._rng)
            model.compile(loss=model.loss, optimizer=copy.deepcopy(optimizer))
        if run["verbose"]:
            print(f"restart {restart + 1}/{restarts}", file=sys.stdout, flush=True)
        history = _run(model, X, y, validation, **run)
        scores.append(_final_score(history))
        if best is None or scores[-1] < _final_score(best):
            best, best_params = history, model.param_buffer.copy()
            best.restart = restart
            best_optimizer = model.optimizer
    model.param_buffer[...] = best_params
    model.compile(loss=model.loss, optimizer=best_optimizer)
    best.restart_scores = scores
    return best
