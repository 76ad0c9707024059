"""Learning-rate schedules: the learning rate as a function of the step number.

A schedule is a callable ``schedule(step) -> float`` counted in optimizer
steps (one per batch, not per epoch).  Give one to any optimizer as its
``lr``; the optimizer evaluates it at its own step counter before each update,
so the first update uses ``schedule(0)``.

Examples
--------
>>> import tinycore as tc
>>> schedule = tc.schedules.StepDecay(0.1, step_size=100, gamma=0.5)
>>> optimizer = tc.Adam(lr=schedule)
>>> optimizer.current_lr()
0.1
"""
from __future__ import annotations

import math
import numbers

from tinycore._validation import check_positive_int, check_real

__all__ = ["LearningRateSchedule", "StepDecay", "ExponentialDecay", "CosineDecay",
           "SCHEDULES", "serialize", "deserialize"]


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


def _check_non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _check_unit(value, name: str, *, low_inclusive: bool) -> float:
    """A real number in [0, 1] or (0, 1]."""
    value = check_real(value, name, low=0.0, low_inclusive=low_inclusive)
    if value > 1.0:
        raise ValueError(f"{name} must be <= 1, got {value}")
    return value


class LearningRateSchedule:
    """Base class: a learning rate that depends on the optimizer step.

    Subclasses implement ``_value(step)`` and ``get_config()``; the
    constructor arguments must be exactly the keys of ``get_config()`` so
    that ``type(s)(**s.get_config())`` rebuilds the schedule.
    """

    def __call__(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (an int >= 0)."""
        return float(self._value(_check_step(step)))

    def _value(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor arguments, as plain numbers (for saving)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        """Rebuild a schedule from :meth:`get_config`'s dict."""
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class StepDecay(LearningRateSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps.

    ``lr(step) = initial_lr * gamma ** (step // step_size)``, the staircase
    of ``torch.optim.lr_scheduler.StepLR`` (which counts whatever its
    ``step()`` is called for, usually epochs; this one counts optimizer steps).

    Parameters
    ----------
    initial_lr : float
        The learning rate of steps 0 to ``step_size - 1``; > 0.
    step_size : int
        Number of steps between two decays; >= 1.
    gamma : float, default 0.1
        The factor applied at each decay, in (0, 1].

    Examples
    --------
    >>> from tinycore.schedules import StepDecay
    >>> schedule = StepDecay(0.1, step_size=10, gamma=0.5)
    >>> [schedule(step) for step in (0, 9, 10, 25)]
    [0.1, 0.1, 0.05, 0.025]
    """

    def __init__(self, initial_lr: float, step_size: int, gamma: float = 0.1):
        self.initial_lr = check_real(initial_lr, "initial_lr", low=0.0, low_inclusive=False)
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = _check_unit(gamma, "gamma", low_inclusive=False)

    def _value(self, step: int) -> float:
        return self.initial_lr * self.gamma ** (step // self.step_size)

    def get_config(self) -> dict:
        return {"initial_lr": self.initial_lr, "step_size": self.step_size,
                "gamma": self.gamma}


class ExponentialDecay(LearningRateSchedule):
    """Decay the learning rate smoothly by ``decay_rate`` every ``decay_steps`` steps.

    ``lr(step) = initial_lr * decay_rate ** (step / decay_steps)`` (Keras's
    ``ExponentialDecay`` without the staircase; with ``decay_steps=1`` it is
    ``torch.optim.lr_scheduler.ExponentialLR`` stepped once per batch).

    Parameters
    ----------
    initial_lr : float
        The learning rate of step 0; > 0.
    decay_rate : float
        The factor the learning rate has shrunk by after ``decay_steps``
        steps, in (0, 1].
    decay_steps : int, default 1
        >= 1.

    Examples
    --------
    >>> from tinycore.schedules import ExponentialDecay
    >>> schedule = ExponentialDecay(0.1, decay_rate=0.5, decay_steps=100)
    >>> [round(schedule(step), 6) for step in (0, 50, 100, 200)]
    [0.1, 0.070711, 0.05, 0.025]
    """

    def __init__(self, initial_lr: float, decay_rate: float, decay_steps: int = 1):
        self.initial_lr = check_real(initial_lr, "initial_lr", low=0.0, low_inclusive=False)
        self.decay_rate = _check_unit(decay_rate, "decay_rate", low_inclusive=False)
        self.decay_steps = check_positive_int(decay_steps, "decay_steps")

    def _value(self, step: int) -> float:
        return self.initial_lr * self.decay_rate ** (step / self.decay_steps)

    def get_config(self) -> dict:
        return {"initial_lr": self.initial_lr, "decay_rate": self.decay_rate,
                "decay_steps": self.decay_steps}


class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up, then a half cosine from ``initial_lr`` down to
    ``alpha * initial_lr`` (Loshchilov & Hutter, SGDR, 2017, without restarts).

    For ``step < warmup_steps``::

        lr = warmup_lr + (initial_lr - warmup_lr) * step / warmup_steps

    then, with ``t = min(step - warmup_steps, decay_steps) / decay_steps``::

        lr = initial_lr * ((1 - alpha) * (1 + cos(pi * t)) / 2 + alpha)

    and ``alpha * initial_lr`` for ever after the decay.  The decay starts
    after the warm-up (``decay_steps`` does not include it), as in Keras's
    ``CosineDecay``; unlike Keras, ``initial_lr`` is the peak and
    ``warmup_lr`` the starting value of the warm-up.

    Parameters
    ----------
    initial_lr : float
        The peak learning rate, reached at the end of the warm-up; > 0.
    decay_steps : int
        Length of the cosine decay, in steps; >= 1.
    alpha : float, default 0.0
        The final learning rate as a fraction of ``initial_lr``, in [0, 1].
    warmup_steps : int, default 0
        Length of the linear warm-up; 0 for none.
    warmup_lr : float, default 0.0
        The learning rate of step 0 when there is a warm-up; >= 0.  (With
        the default 0, the first update of a warm-up does not move the
        weights.)

    Examples
    --------
    >>> from tinycore.schedules import CosineDecay
    >>> schedule = CosineDecay(0.1, decay_steps=100, alpha=0.1, warmup_steps=10)
    >>> [round(schedule(step), 6) for step in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.05, 0.1, 0.055, 0.01, 0.01]
    """

    def __init__(self, initial_lr: float, decay_steps: int, alpha: float = 0.0,
                 warmup_steps: int = 0, warmup_lr: float = 0.0):
        self.initial_lr = check_real(initial_lr, "initial_lr", low=0.0, low_inclusive=False)
        self.decay_steps = check_positive_int(decay_steps, "decay_steps")
        self.alpha = _check_unit(alpha, "alpha", low_inclusive=True)
        self.warmup_steps = _check_non_negative_int(warmup_steps, "warmup_steps")
        self.warmup_lr = check_real(warmup_lr, "warmup_lr", low=0.0)

    def _value(self, step: int) -> float:
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return self.warmup_lr + (self.initial_lr - self.warmup_lr) * fraction
        t = min(step - self.warmup_steps, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * t))       # 1 -> 0 as t goes 0 -> 1
        return self.initial_lr * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {"initial_lr": self.initial_lr, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_steps": self.warmup_steps,
                "warmup_lr": self.warmup_lr}


#: Schedule class name -> class, for :func:`deserialize`.
SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """``{"type": class name, "config": get_config()}``: plain data for saving.

    Examples
    --------
    >>> from tinycore.schedules import StepDecay, serialize
    >>> serialize(StepDecay(0.1, step_size=10))
    {'type': 'StepDecay', 'config': {'initial_lr': 0.1, 'step_size': 10, 'gamma': 0.1}}
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"expected a LearningRateSchedule, got {type(schedule).__name__}")
    return {"type": type(schedule).__name__, "config": dict(schedule.get_config())}


def deserialize(data: dict) -> LearningRateSchedule:
    """Rebuild a schedule from :func:`serialize`'s dict (arguments validated again).

    Examples
    --------
    >>> from tinycore.schedules import deserialize
    >>> deserialize({"type": "StepDecay", "config": {"initial_lr": 0.1, "step_size": 10}})
    StepDecay(initial_lr=0.1, step_size=10, gamma=0.1)
    """
    if not isinstance(data, dict) or set(data) != {"type", "config"}:
        raise ValueError("a serialized schedule is a dict with the keys 'type' and 'config'")
    name, config = data["type"], data["config"]
    if name not in SCHEDULES:
        valid = ", ".join(repr(key) for key in SCHEDULES)
        raise ValueError(f"unknown schedule {name!r}; expected one of {valid}")
    if not isinstance(config, dict):
        raise ValueError(f"the config of a {name} must be a dict, got {type(config).__name__}")
    try:
        return SCHEDULES[name].from_config(config)
    except TypeError as exc:                      # missing or unexpected arguments
        raise ValueError(f"bad config for {name}: {exc}") from None
