"""Optimizers: how a model's parameters move along their gradients.

A model keeps all its parameters in one contiguous buffer and all its
gradients in another of the same layout, so one optimizer step is one kernel
call over the whole model.
"""
from __future__ import annotations

from tinycore import _optim
from tinycore._validation import check_name, check_real

__all__ = ["Optimizer", "SGD", "OPTIMIZERS", "get"]


class Optimizer:
    """Base class: validates hyper-parameters and applies one update per :meth:`step`.

    Subclasses implement ``_update(params, grads)`` over the flat buffers.
    """

    def step(self, model) -> None:
        """Update ``model``'s parameters in place from the gradients of its last backward."""
        params = getattr(model, "param_buffer", None)
        grads = getattr(model, "grad_buffer", None)
        if params is None or grads is None:
            raise TypeError(
                f"step() takes a tinycore.Sequential, got {type(model).__name__}"
            )
        self._update(params, grads)

    def _update(self, params, grads) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent: w <- w - lr * dL/dw.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate: the size of each step against the gradient.  Too
        small and training crawls; too large and the weights overshoot the
        minimum, oscillate, and can diverge.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.SGD(lr=0.1)
    SGD(lr=0.1)
    """

    def __init__(self, lr: float = 0.01):
        self.lr = check_real(lr, "lr", low=0.0, low_inclusive=False)

    def _update(self, params, grads) -> None:
        _optim.sgd_update(self.lr, params, grads)

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr:g})"


#: Optimizer name -> class, for ``compile(optimizer="sgd")``.
OPTIMIZERS = {"sgd": SGD}


def get(optimizer) -> Optimizer:
    """Return an optimizer from its name (default hyper-parameters) or itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    return OPTIMIZERS[check_name(optimizer, OPTIMIZERS, "optimizer")]()
