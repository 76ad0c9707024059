"""Optimizers: how a model's parameters move along their gradients.

A model keeps all its parameters in one contiguous buffer and all its
gradients in another of the same layout, so one optimizer step is one kernel
call over the whole model, and an optimizer's state (momentum, moving
averages) is a few more buffers of that size.

The update rules are PyTorch's (``torch.optim``), term for term and in the
parameters' own precision; each class says where a default or a convention
differs.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from tinycore import _simd
from tinycore._validation import FLOAT_DTYPES, check_name, check_real
from tinycore.schedules import LearningRateSchedule, deserialize, serialize

_optim = _simd.load("_optim")

# The update rules the compiled plan applies itself (see Optimizer._plan_rule).
_RULE_SGD = int(_optim.RuleKind.RULE_SGD)
_RULE_ADAGRAD = int(_optim.RuleKind.RULE_ADAGRAD)
_RULE_RMSPROP = int(_optim.RuleKind.RULE_RMSPROP)
_RULE_ADAM = int(_optim.RuleKind.RULE_ADAM)

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSProp", "Adam", "AdamW", "OPTIMIZERS", "get",
           "from_state_dict"]


# --- hyper-parameter checks ----------------------------------------------------------

def _check_lr(value, name: str):
    """A float > 0, or a schedule (kept as it is)."""
    if isinstance(value, LearningRateSchedule):
        return value
    return check_real(value, name, low=0.0, low_inclusive=False)


def _check_positive(value, name: str) -> float:
    return check_real(value, name, low=0.0, low_inclusive=False)


def _check_non_negative(value, name: str) -> float:
    return check_real(value, name, low=0.0)


def _check_beta(value, name: str) -> float:
    """A decay rate of a moving average: in [0, 1)."""
    value = check_real(value, name, low=0.0)
    if value >= 1.0:
        raise ValueError(f"{name} must be < 1, got {value}")
    return value


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _check_clipnorm(value, name: str):
    return None if value is None else _check_positive(value, name)


def _hyper_parameter(name: str, check, doc: str) -> property:
    """A property that validates every assignment, in __init__ and after."""
    private = "_" + name

    def get(self):
        return getattr(self, private)

    def set(self, value):
        setattr(self, private, check(value, name))

    return property(get, set, doc=doc)


# --- the base class ------------------------------------------------------------------

class Optimizer:
    """Base class: validates hyper-parameters and applies one update per :meth:`step`.

    Subclasses implement ``_update(params, grads)`` over the flat buffers
    (it receives the raw gradients; ``self._grad_scale(grads)`` is the factor
    that applies ``clipnorm``) and list their hyper-parameters in
    ``_HYPER_PARAMETERS`` and their state buffers in ``_STATE``.

    An optimizer belongs to one parameter buffer: its first :meth:`step`
    binds it to that buffer's size and dtype (its state buffers have them),
    and a step on a model with another size or dtype raises ValueError.

    Attributes
    ----------
    lr : float or tinycore.schedules.LearningRateSchedule
        May be reassigned between steps (a callback lowering it, say).
    iterations : int
        Number of steps taken (restored by :meth:`load_state_dict`).
    """

    #: Names of the hyper-parameters, in constructor order.
    _HYPER_PARAMETERS: tuple[str, ...] = ()
    #: Names of every state buffer the optimizer may hold.
    _STATE: tuple[str, ...] = ()
    #: State buffers that hold squares (must be >= 0).
    _NON_NEGATIVE_STATE: tuple[str, ...] = ()

    # Class-level defaults, so that a user subclass that skips
    # Optimizer.__init__ (and only defines _update) still steps.
    iterations = 0
    _clipnorm = None
    _state: dict = {}
    _size = None
    _dtype = None

    lr = _hyper_parameter("lr", _check_lr, "Learning rate: a float > 0 or a schedule.")
    clipnorm = _hyper_parameter(
        "clipnorm", _check_clipnorm,
        "Clip the gradient to this global L2 norm before the update (None: never).")

    def __init__(self, lr=0.01, clipnorm=None):
        self.lr = lr
        self.clipnorm = clipnorm
        self.iterations = 0
        self._state = {}
        self._size = None
        self._dtype = None

    # -- stepping -------------------------------------------------------------

    def step(self, model) -> None:
        """Update ``model``'s parameters in place from the gradients of its last backward."""
        params = getattr(model, "param_buffer", None)
        grads = getattr(model, "grad_buffer", None)
        if params is None or grads is None:
            raise TypeError(
                f"step() takes a tinycore.Sequential, got {type(model).__name__}"
            )
        self._bind(params, grads)
        self._update(params, grads)
        self.iterations += 1

    def _bind(self, params, grads) -> None:
        """Check the two buffers (the kernels have no bounds checks); tie the
        optimizer to their size and dtype on the first step."""
        if not (isinstance(params, np.ndarray) and isinstance(grads, np.ndarray)):
            raise TypeError("param_buffer and grad_buffer must be numpy arrays")
        if (params.ndim != 1 or grads.shape != params.shape or grads.dtype != params.dtype
                or params.dtype not in FLOAT_DTYPES.values()
                or not (params.flags.c_contiguous and grads.flags.c_contiguous)
                or not params.flags.writeable):
            raise ValueError(
                "param_buffer and grad_buffer must be writeable, contiguous 1-D float32 "
                f"or float64 arrays of one shape and dtype, got {params.shape} "
                f"{params.dtype} and {grads.shape} {grads.dtype}"
            )
        if self._size is None:
            self._size, self._dtype = params.size, params.dtype
        elif params.size != self._size or params.dtype != self._dtype:
            raise ValueError(
                f"this {type(self).__name__} optimizer updates {self._size} {self._dtype} "
                f"parameters (the model of its first step, or its loaded state), got a "
                f"model with {params.size} {params.dtype} parameters; use a new "
                "optimizer for another model"
            )

    def _bind_model(self, params, grads) -> None:
        """:meth:`_bind` for a model's own buffers, which are valid by
        construction: past the first step, only the binding is checked (the
        full check costs more than a small model's step)."""
        if self._size is None or params.size != self._size or params.dtype != self._dtype:
            self._bind(params, grads)

    def _update(self, params: np.ndarray, grads: np.ndarray) -> None:
        raise NotImplementedError

    def current_lr(self) -> float:
        """The learning rate of the next step: ``lr``, or the schedule at :attr:`iterations`."""
        lr = self.lr
        if not isinstance(lr, LearningRateSchedule):
            return lr
        value = lr(self.iterations)
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{lr!r} gave the learning rate {value} at step {self.iterations}")
        return value

    def _grad_scale(self, grads: np.ndarray) -> float:
        """clipnorm / ||grads|| if the global norm exceeds clipnorm, else 1.

        The kernels multiply each gradient by this factor as they read it:
        the update uses the clipped gradient and ``grad_buffer`` is left as
        the backward pass wrote it (PyTorch's clip_grad_norm_ rescales the
        gradients in place instead).  No 1e-6 is added to the norm as
        PyTorch does: the clipped gradient has norm clipnorm exactly.
        """
        if self._clipnorm is None:
            return 1.0
        norm = _optim.global_norm(grads)
        return self._clipnorm / norm if norm > self._clipnorm else 1.0

    def _buffer(self, name: str, params: np.ndarray) -> np.ndarray:
        """State buffer ``name``, created as zeros like ``params`` when first needed."""
        state = self.__dict__.setdefault("_state", {})   # (not the class default)
        buffer = state.get(name)
        if buffer is None:
            buffer = state[name] = np.zeros_like(params)
        return buffer

    def _required_state(self) -> set[str]:
        """The buffers that must exist once a step has been taken."""
        return set()

    def _plan_sgd_lr(self) -> float | None:
        """The learning rate of the next step if that step is exactly
        ``w -= lr * g`` (so the compiled training plan may apply it itself,
        fused into the backward pass), else None.

        A caller that applies the update this way must then add 1 to
        :attr:`iterations`, as :meth:`step` does.
        """
        return None

    def _plan_rule(self, params: np.ndarray, grads: np.ndarray) -> tuple | None:
        """The next step as the compiled training plan applies it itself,
        layer by layer inside its one call (see ``_plan_rule_tuple``), or
        None if only :meth:`step` can take it.

        Binds the optimizer to the buffers and makes its state, as step()
        does.  A caller that has the plan take the step must then add 1 to
        :attr:`iterations` as step() does, or, if the plan took no step,
        call :meth:`_forget_untaken_step`.
        """
        return None

    def _forget_untaken_step(self) -> None:
        """Drop the state :meth:`_plan_rule` made for a first step that the
        plan did not take (it diverged, or the batch was refused): an
        optimizer that has taken no step holds no state (see
        :meth:`load_state_dict`).  Past the first step the plan leaves the
        state as it was."""
        if self.iterations == 0:
            self._state = {}

    def _check_hyper_parameters(self) -> None:
        """Constraints between hyper-parameters (each one is checked on assignment)."""

    # -- saving and restoring --------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume: type, hyper-parameters, step count, state copies.

        A schedule ``lr`` is saved as ``tinycore.schedules.serialize(lr)``.
        """
        hyper = {}
        for name in self._HYPER_PARAMETERS:
            value = getattr(self, name)
            hyper[name] = serialize(value) if isinstance(value, LearningRateSchedule) else value
        return {"type": type(self).__name__, "hyper_parameters": hyper,
                "iterations": int(self.iterations),
                "state": {name: array.copy() for name, array in self._state.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned (hyper-parameters included).

        Everything is checked before anything changes; any mismatch raises
        ValueError.  The state buffers' size is checked against the model on
        the next :meth:`step`.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        _check_keys(state_dict, {"type", "hyper_parameters", "iterations", "state"},
                    "the state dict")
        name = type(self).__name__
        if state_dict["type"] != name:
            raise ValueError(f"the state dict is for {state_dict['type']!r}, not {name!r}")
        scratch = self._hyper_parameters_from(state_dict["hyper_parameters"])
        iterations = state_dict["iterations"]
        if (isinstance(iterations, (bool, np.bool_))
                or not isinstance(iterations, numbers.Integral)
                or not 0 <= iterations < 2**62):
            # (The bound keeps the step count a C integer in the update kernels.)
            raise ValueError(f"iterations must be an integer in [0, 2**62), got {iterations!r}")
        state = self._state_from(state_dict["state"], int(iterations), scratch)
        for hyper in self._HYPER_PARAMETERS:
            setattr(self, "_" + hyper, getattr(scratch, "_" + hyper))
        self.iterations = int(iterations)
        self._state = state
        first = next(iter(state.values()), None)
        self._size, self._dtype = ((None, None) if first is None
                                   else (first.size, first.dtype))

    def _hyper_parameters_from(self, hyper) -> Optimizer:
        """A copy of self with the hyper-parameters of ``hyper``, validated."""
        if not isinstance(hyper, dict):
            raise ValueError(f"hyper_parameters must be a dict, got {type(hyper).__name__}")
        _check_keys(hyper, set(self._HYPER_PARAMETERS), "hyper_parameters")
        scratch = copy.copy(self)
        try:
            for key in self._HYPER_PARAMETERS:
                value = hyper[key]
                if key == "lr" and isinstance(value, dict):
                    value = deserialize(value)
                setattr(scratch, key, value)
            scratch._check_hyper_parameters()
        except TypeError as exc:        # a wrong type in a state dict is a mismatch too
            raise ValueError(f"bad hyper-parameter in the state dict: {exc}") from None
        return scratch

    def _state_from(self, state, iterations: int, scratch: Optimizer) -> dict:
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict, got {type(state).__name__}")
        unknown = set(state) - set(self._STATE)
        if unknown:
            raise ValueError(f"unexpected state {sorted(unknown)} for {type(self).__name__}; "
                             f"it holds {list(self._STATE)}")
        if iterations == 0 and state:
            raise ValueError("a state dict with iterations 0 must have an empty state")
        missing = scratch._required_state() - set(state) if iterations > 0 else set()
        if missing:
            raise ValueError(f"state {sorted(missing)} is missing after {iterations} steps")
        arrays = {}
        for key, array in state.items():
            if not isinstance(array, np.ndarray):
                raise ValueError(f"state {key!r} must be a numpy array, "
                                 f"got {type(array).__name__}")
            if array.dtype not in FLOAT_DTYPES.values() or array.ndim != 1:
                raise ValueError(f"state {key!r} must be a 1-D float32 or float64 array, "
                                 f"got shape {array.shape} and dtype {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError(f"state {key!r} contains NaN or infinity")
            if key in self._NON_NEGATIVE_STATE and (array < 0).any():
                raise ValueError(f"state {key!r} holds squares and must be >= 0")
            arrays[key] = np.array(array, order="C", copy=True)
        layouts = {(array.size, array.dtype) for array in arrays.values()}
        if len(layouts) > 1:
            raise ValueError(f"the state arrays differ in size or dtype: {sorted(map(str, layouts))}")
        if layouts and self._size is not None and layouts != {(self._size, self._dtype)}:
            raise ValueError(
                f"the state is for {layouts.pop()[0]} parameters, but this optimizer "
                f"already updates {self._size} {self._dtype} parameters"
            )
        return arrays

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={getattr(self, name)!r}"
                              for name in self._HYPER_PARAMETERS)
        return f"{type(self).__name__}({arguments})"


def _plan_rule_tuple(kind, lr: float, *, momentum=0.0, nesterov=False, weight_decay=0.0,
                     decay=1.0, rho=0.0, beta1=0.0, beta2=0.0, eps=0.0, t=0, clipnorm=None,
                     state0=None, state1=None) -> tuple:
    """An update rule in the form the compiled plan reads (``_optim._read_rule``).

    ``kind`` is one of the ``_RULE_*`` codes; the fields a rule does not use
    keep their defaults, and ``clipnorm=None`` (never clip) is sent as 0.
    """
    return (kind, lr, momentum, nesterov, weight_decay, decay, rho, beta1, beta2, eps,
            t, 0.0 if clipnorm is None else clipnorm, state0, state1)


def _check_keys(mapping: dict, expected: set, what: str) -> None:
    missing, unexpected = expected - set(mapping), set(mapping) - expected
    if missing or unexpected:
        raise ValueError(f"{what} has missing keys {sorted(missing)} and unexpected keys "
                         f"{sorted(map(str, unexpected))}; expected {sorted(expected)}")


# --- the optimizers ------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and weight decay.

    The rule of ``torch.optim.SGD`` (dampening 0), for gradient ``g``::

        g = g + weight_decay * w              (L2 penalty, folded into the gradient)
        b = momentum * b + g                  (b = g on the first step)
        w = w - lr * b                        (momentum)
        w = w - lr * (g + momentum * b)       (nesterov=True)
        w = w - lr * g                        (momentum=0)

    Momentum averages successive gradients, so directions that agree add up
    and oscillations across a narrow valley cancel; Nesterov's variant takes
    the gradient as if one momentum step ahead.

    Parameters
    ----------
    lr : float or LearningRateSchedule, default 0.01
        The step size against the gradient.  Too small and training crawls;
        too large and the weights overshoot the minimum, oscillate, and can
        diverge.
    momentum : float, default 0.0
        >= 0; 0.9 is usual.
    nesterov : bool, default False
        Needs momentum > 0.
    weight_decay : float, default 0.0
        >= 0.
    clipnorm : float or None, default None
        If the gradient's global L2 norm exceeds it, the update uses the
        gradient scaled down to that norm (``grad_buffer`` is not modified).

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.SGD(lr=0.1, momentum=0.9, nesterov=True)
    SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, clipnorm=None)
    """

    _HYPER_PARAMETERS = ("lr", "momentum", "nesterov", "weight_decay", "clipnorm")
    _STATE = ("momentum",)

    momentum = _hyper_parameter("momentum", _check_non_negative, "Momentum factor, >= 0.")
    nesterov = _hyper_parameter("nesterov", _check_bool, "Nesterov momentum.")
    weight_decay = _hyper_parameter("weight_decay", _check_non_negative,
                                    "L2 penalty added to the gradient, >= 0.")

    def __init__(self, lr=0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, *, clipnorm: float | None = None):
        super().__init__(lr, clipnorm)
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self._check_hyper_parameters()

    def _check_hyper_parameters(self) -> None:
        if self._nesterov and self._momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")

    def _plan_sgd_lr(self) -> float | None:
        # On every training step: reads the stored values, not the properties.
        if self._momentum > 0.0 or self._weight_decay > 0.0 or self._clipnorm is not None:
            return None
        lr = self._lr
        return lr if type(lr) is float else self.current_lr()

    def _plan_rule(self, params, grads) -> tuple:
        self._bind_model(params, grads)
        buf = self._buffer("momentum", params) if self._momentum > 0.0 else None
        return _plan_rule_tuple(_RULE_SGD, self.current_lr(), momentum=self._momentum,
                                nesterov=self._nesterov, weight_decay=self._weight_decay,
                                clipnorm=self._clipnorm, state0=buf)

    def _update(self, params, grads) -> None:
        lr = self.current_lr()
        scale = self._grad_scale(grads)
        if self._momentum > 0.0:
            _optim.sgd_momentum_step(lr, self._momentum, self._nesterov, self._weight_decay,
                                     scale, params, grads, self._buffer("momentum", params))
        elif self._weight_decay == 0.0 and scale == 1.0:
            _optim.sgd_update(lr, params, grads)       # the compiled plan's own kernel
        else:
            _optim.sgd_step(lr, self._weight_decay, scale, params, grads)


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011): per-weight steps that shrink
    with the squared gradients seen so far.

    The rule of ``torch.optim.Adagrad`` (no lr decay, initial accumulator 0)::

        s = s + g * g
        w = w - lr * g / (sqrt(s) + eps)

    The defaults are PyTorch's.  (Keras starts the accumulator at 0.1 and
    uses eps=1e-7.)

    Parameters
    ----------
    lr : float or LearningRateSchedule, default 0.01
    eps : float, default 1e-10
        Added to sqrt(s), > 0: keeps the first steps finite.
    clipnorm : float or None, default None
        See :class:`SGD`.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.Adagrad(lr=0.1)
    Adagrad(lr=0.1, eps=1e-10, clipnorm=None)
    """

    _HYPER_PARAMETERS = ("lr", "eps", "clipnorm")
    _STATE = ("sum_sq",)
    _NON_NEGATIVE_STATE = ("sum_sq",)

    eps = _hyper_parameter("eps", _check_positive, "Added to the denominator, > 0.")

    def __init__(self, lr=0.01, eps: float = 1e-10, *, clipnorm: float | None = None):
        super().__init__(lr, clipnorm)
        self.eps = eps

    def _required_state(self) -> set[str]:
        return {"sum_sq"}

    def _plan_rule(self, params, grads) -> tuple:
        self._bind_model(params, grads)
        return _plan_rule_tuple(_RULE_ADAGRAD, self.current_lr(), eps=self._eps,
                                clipnorm=self._clipnorm,
                                state0=self._buffer("sum_sq", params))

    def _update(self, params, grads) -> None:
        _optim.adagrad_step(self.current_lr(), self._eps, self._grad_scale(grads),
                            params, grads, self._buffer("sum_sq", params))


class RMSProp(Optimizer):
    """RMSProp (Hinton, 2012): divide the step by a moving RMS of the gradient.

    The rule of ``torch.optim.RMSprop`` (not centred), with ``rho`` for
    PyTorch's ``alpha``::

        v = rho * v + (1 - rho) * g * g
        w = w - lr * g / (sqrt(v) + eps)                 (momentum=0)
        b = momentum * b + g / (sqrt(v) + eps);  w = w - lr * b

    Differences from PyTorch: the defaults are Keras's (lr 0.001, rho 0.9,
    eps 1e-7; PyTorch has lr 0.01, alpha 0.99, eps 1e-8).  eps sits outside
    the square root as in PyTorch (Keras adds it inside, sqrt(v + eps)), and
    lr multiplies the momentum buffer rather than entering it (as PyTorch;
    Keras accumulates lr * g / ...).

    Parameters
    ----------
    lr : float or LearningRateSchedule, default 0.001
    rho : float, default 0.9
        Decay of the moving average of g*g, in [0, 1).
    eps : float, default 1e-7
        > 0.
    momentum : float, default 0.0
        >= 0.
    clipnorm : float or None, default None
        See :class:`SGD`.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.RMSProp()
    RMSProp(lr=0.001, rho=0.9, eps=1e-07, momentum=0.0, clipnorm=None)
    """

    _HYPER_PARAMETERS = ("lr", "rho", "eps", "momentum", "clipnorm")
    _STATE = ("sq_avg", "momentum")
    _NON_NEGATIVE_STATE = ("sq_avg",)

    rho = _hyper_parameter("rho", _check_beta, "Decay of the mean square, in [0, 1).")
    eps = _hyper_parameter("eps", _check_positive, "Added to the denominator, > 0.")
    momentum = _hyper_parameter("momentum", _check_non_negative, "Momentum factor, >= 0.")

    def __init__(self, lr=0.001, rho: float = 0.9, eps: float = 1e-7,
                 momentum: float = 0.0, *, clipnorm: float | None = None):
        super().__init__(lr, clipnorm)
        self.rho = rho
        self.eps = eps
        self.momentum = momentum

    def _required_state(self) -> set[str]:
        return {"sq_avg"}

    def _plan_rule(self, params, grads) -> tuple:
        self._bind_model(params, grads)
        buf = self._buffer("momentum", params) if self._momentum > 0.0 else None
        return _plan_rule_tuple(_RULE_RMSPROP, self.current_lr(), rho=self._rho,
                                eps=self._eps, momentum=self._momentum,
                                clipnorm=self._clipnorm,
                                state0=self._buffer("sq_avg", params), state1=buf)

    def _update(self, params, grads) -> None:
        buf = self._buffer("momentum", params) if self._momentum > 0.0 else None
        _optim.rmsprop_step(self.current_lr(), self._rho, self._eps, self._momentum,
                            self._grad_scale(grads), params, grads,
                            self._buffer("sq_avg", params), buf)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): momentum on the gradient, RMSProp on its
    scale, both bias-corrected for their start at zero.

    The rule of ``torch.optim.Adam``, at step t = 1, 2, ...::

        g = g + weight_decay * w                 (L2 penalty, into the gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    eps is added after the bias correction, as in PyTorch (Keras adds it to
    the uncorrected sqrt(v), a slightly different eps).  The L2 penalty goes
    through the adaptive scaling, so it is weaker on weights with large
    gradients; :class:`AdamW` decouples it.

    Parameters
    ----------
    lr : float or LearningRateSchedule, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
        Decays of the two moving averages, in [0, 1).
    eps : float, default 1e-8
        > 0.
    weight_decay : float, default 0.0
        >= 0.
    clipnorm : float or None, default None
        See :class:`SGD`.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.Adam(lr=0.01)
    Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, clipnorm=None)
    """

    _HYPER_PARAMETERS = ("lr", "beta1", "beta2", "eps", "weight_decay", "clipnorm")
    _STATE = ("m", "v")
    _NON_NEGATIVE_STATE = ("v",)

    beta1 = _hyper_parameter("beta1", _check_beta, "Decay of the first moment, in [0, 1).")
    beta2 = _hyper_parameter("beta2", _check_beta, "Decay of the second moment, in [0, 1).")
    eps = _hyper_parameter("eps", _check_positive, "Added to the denominator, > 0.")
    weight_decay = _hyper_parameter("weight_decay", _check_non_negative, "Weight decay, >= 0.")

    def __init__(self, lr=0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, *,
                 clipnorm: float | None = None):
        super().__init__(lr, clipnorm)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay

    def _required_state(self) -> set[str]:
        return {"m", "v"}

    def _decay(self, lr: float) -> tuple[float, float]:
        """(L2 coefficient added to the gradient, factor applied to w first)."""
        return self._weight_decay, 1.0

    def _plan_rule(self, params, grads) -> tuple:
        self._bind_model(params, grads)
        lr = self.current_lr()
        l2, decay = self._decay(lr)
        return _plan_rule_tuple(_RULE_ADAM, lr, weight_decay=l2, decay=decay,
                                beta1=self._beta1, beta2=self._beta2, eps=self._eps,
                                t=self.iterations + 1, clipnorm=self._clipnorm,
                                state0=self._buffer("m", params),
                                state1=self._buffer("v", params))

    def _update(self, params, grads) -> None:
        lr = self.current_lr()
        l2, decay = self._decay(lr)
        _optim.adam_step(lr, self._beta1, self._beta2, self._eps, l2, decay,
                         self.iterations + 1, self._grad_scale(grads), params, grads,
                         self._buffer("m", params), self._buffer("v", params))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    The rule of ``torch.optim.AdamW``: first ``w = w * (1 - lr * weight_decay)``,
    then the :class:`Adam` step without any L2 term.  The decay is the same
    for every weight, however large its gradients.  As in PyTorch the decay
    is scaled by the current lr (the paper scales it by the schedule
    multiplier only).

    Parameters
    ----------
    lr : float or LearningRateSchedule, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
    eps : float, default 1e-8
    weight_decay : float, default 0.01
        >= 0.
    clipnorm : float or None, default None
        See :class:`SGD`.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.AdamW()
    AdamW(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01, clipnorm=None)
    """

    def __init__(self, lr=0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01, *,
                 clipnorm: float | None = None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, clipnorm=clipnorm)

    def _decay(self, lr: float) -> tuple[float, float]:
        return 0.0, 1.0 - lr * self._weight_decay


def _plan_can_step(optimizer_class) -> bool:
    """Whether the compiled plan may take this class's steps itself (through
    :meth:`Optimizer._plan_rule`): its step() and its rule are those of one
    of tinycore's optimizers, not a subclass's own.  (Hooks the rule calls,
    such as current_lr or _decay, may be overridden: _plan_rule calls them
    too.)"""
    update = getattr(optimizer_class, "_update", None)
    plan_rule = getattr(optimizer_class, "_plan_rule", None)
    return (getattr(optimizer_class, "step", None) is Optimizer.step
            and getattr(optimizer_class, "_grad_scale", None) is Optimizer._grad_scale
            and any(update is own_update and plan_rule is own_plan_rule
                    for own_update, own_plan_rule in _PLAN_RULES))


# Each built-in rule's _update and the _plan_rule that takes the same step.
_PLAN_RULES = [(cls.__dict__["_update"], cls.__dict__["_plan_rule"])
               for cls in (SGD, Adagrad, RMSProp, Adam)]

#: Optimizer name -> class, for ``compile(optimizer="adam")``.
OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSProp, "adam": Adam,
              "adamw": AdamW}


def get(optimizer) -> Optimizer:
    """Return an optimizer from its name (default hyper-parameters) or itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    return OPTIMIZERS[check_name(optimizer, OPTIMIZERS, "optimizer")]()


def from_state_dict(state_dict: dict, model=None) -> Optimizer:
    """A new optimizer rebuilt from :meth:`Optimizer.state_dict`'s dict.

    Parameters
    ----------
    state_dict : dict
        ``{"type", "hyper_parameters", "iterations", "state"}``.  Without
        ``"iterations"`` (or with ``"with_state": False``, as
        :func:`tinycore.save` writes when the optimizer state is left out) a
        fresh optimizer with the saved hyper-parameters is returned.
    model : tinycore.Sequential, optional
        If given, the saved state must fit its parameter buffer (size and
        dtype); checked now rather than on the first step.

    Raises
    ------
    ValueError
        For an unknown type or any mismatch (see :meth:`Optimizer.load_state_dict`).

    Examples
    --------
    >>> import tinycore as tc
    >>> saved = tc.Adam(lr=0.01).state_dict()
    >>> tc.optimizers.from_state_dict(saved)
    Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, clipnorm=None)
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    state_dict = dict(state_dict)
    with_state = state_dict.pop("with_state", True)
    if not isinstance(with_state, (bool, np.bool_)):
        raise ValueError(f"with_state must be True or False, got {with_state!r}")
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    name = state_dict.get("type")
    if name not in classes:
        valid = ", ".join(repr(key) for key in classes)
        raise ValueError(f"unknown optimizer type {name!r}; expected one of {valid}")
    if not with_state or "iterations" not in state_dict:
        if state_dict.get("state"):
            raise ValueError("a state dict without iterations cannot hold a state")
        state_dict.update(iterations=0, state={})
    optimizer = classes[name]()                 # defaults, all replaced by the load
    optimizer.load_state_dict(state_dict)
    if model is not None and optimizer._size is not None:
        params = model.param_buffer
        if (params.size, params.dtype) != (optimizer._size, optimizer._dtype):
            raise ValueError(
                f"the saved {name} state is for {optimizer._size} {optimizer._dtype} "
                f"parameters, the model has {params.size} {params.dtype}"
            )
    return optimizer
