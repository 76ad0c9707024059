"""Callbacks: code that :meth:`Sequential.fit` runs at fixed points of training.

A callback subclasses :class:`Callback` and overrides the hooks it needs.  The
``logs`` dict passed to ``on_epoch_end`` holds the epoch's metrics ("loss",
"accuracy", "val_loss", "val_accuracy", as available); ``on_batch_end``
gets the batch's "loss" and "size".  Setting ``model.stop_training = True``
from any hook ends the run cleanly after the current batch.
"""
from __future__ import annotations

import math

import numpy as np

from tinycore._validation import check_real

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"]


class Callback:
    """Base class: every hook does nothing; ``self.model`` is set by ``fit``."""

    model = None

    def set_model(self, model) -> None:
        """Called by ``fit`` before training starts."""
        self.model = model

    def on_train_begin(self, logs=None) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Before each epoch (counted from 0)."""

    def on_batch_end(self, batch: int, logs=None) -> None:
        """After each optimizer step; ``logs`` has "loss" and "size"."""

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        """After each epoch, with its metrics in ``logs``."""

    def on_train_end(self, logs=None) -> None:
        """After the last epoch, or after a stop."""


class _Monitor:
    """Tracks the best value of one metric ("min" for losses, "max" otherwise)."""

    def __init__(self, monitor: str, min_delta: float, mode: str):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {type(monitor).__name__}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.min_delta = check_real(min_delta, "min_delta", low=0.0)
        if mode == "auto":
            mode = "max" if "accuracy" in monitor else "min"
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs) -> float:
        if not logs or self.monitor not in logs:
            available = ", ".join(sorted(logs or {})) or "none"
            raise ValueError(f"monitor {self.monitor!r} is not among the epoch's "
                             f"metrics ({available}); pass validation data for val_*")
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stop training when a metric has stopped improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    patience : int, default 0
        Epochs without improvement after which training stops.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement.
    restore_best_weights : bool, default False
        At the end, put back the weights of the best epoch.
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises accuracies and minimises everything else.

    Attributes
    ----------
    stopped_epoch : int or None
        The epoch after which training was stopped.
    best_epoch : int or None
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0,
                 min_delta: float = 0.0, restore_best_weights: bool = False,
                 mode: str = "auto"):
        self._monitor = _Monitor(monitor, min_delta, mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.stopped_epoch = None
        self.best_epoch = None
        self._wait = 0
        self._best_weights = None

    def on_train_begin(self, logs=None):
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf
        self._wait, self.stopped_epoch, self.best_epoch = 0, None, None
        self._best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if self._monitor.improved(self._monitor.value(logs)):
            self._wait = 0
            self.best_epoch = epoch
            if self.restore_best_weights:
                self._best_weights = self.model.param_buffer.copy()
            return
        self._wait += 1
        if self._wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self._best_weights is not None:
            self.model.param_buffer[...] = self._best_weights


class ModelCheckpoint(Callback):
    """Save the model after each epoch (or only when a metric improves).

    Parameters
    ----------
    path : str or os.PathLike
        May contain ``{epoch}`` (counted from 1) and metric names, e.g.
        ``"model-{epoch:03d}-{val_loss:.3f}.safetensors"``.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
    include_optimizer : bool, default True
        Store the optimizer state too, so that training can resume exactly.
    mode : {"auto", "min", "max"}, default "auto"
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False,
                 include_optimizer: bool = True, mode: str = "auto"):
        self.path = path
        self._monitor = _Monitor(monitor, 0.0, mode)
        self.save_best_only = bool(save_best_only)
        self.include_optimizer = bool(include_optimizer)

    def on_train_begin(self, logs=None):
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only and not self._monitor.improved(self._monitor.value(logs)):
            return
        path = str(self.path).format(epoch=epoch + 1, **logs)
        self.model.save(path, include_optimizer=self.include_optimizer)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
    min_delta : float, default 1e-4
    min_lr : float, default 0.0
    mode : {"auto", "min", "max"}, default "auto"
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, min_lr: float = 0.0, mode: str = "auto"):
        self._monitor = _Monitor(monitor, min_delta, mode)
        self.factor = check_real(factor, "factor", low=0.0, low_inclusive=False)
        if self.factor >= 1:
            raise ValueError(f"factor must be < 1, got {factor}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        self.min_lr = check_real(min_lr, "min_lr", low=0.0)
        self._wait = 0

    def on_train_begin(self, logs=None):
        lr = getattr(self.model.optimizer, "lr", None)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)):
            raise ValueError("ReduceLROnPlateau needs an optimizer whose lr is a number, "
                             f"not {type(lr).__name__} (a schedule already sets it)")
        self._wait = 0

    def on_epoch_end(self, epoch, logs=None):
        if self._monitor.improved(self._monitor.value(logs)):
            self._wait = 0
            return
        self._wait += 1
        if self._wait > self.patience:
            optimizer = self.model.optimizer
            optimizer.lr = max(float(optimizer.lr) * self.factor, self.min_lr)
            self._wait = 0
