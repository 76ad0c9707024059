"""Check backpropagation against finite differences.

Backpropagation computes every dL/dw in one backward pass; the central
difference (L(w + eps) - L(w - eps)) / (2 eps) estimates each one by running
the network twice.  They should agree to about 1e-7 in float64: a larger gap
means a wrong derivative somewhere.
"""
from __future__ import annotations

import numbers

import numpy as np

from tinycore import losses
from tinycore.layers import Dense
from tinycore.model import Sequential
from tinycore.optimizers import Optimizer

__all__ = ["gradcheck", "relative_error", "TINY"]

#: Floor of the relative error's denominator: below it both gradients are
#: zero to within rounding, and their difference is compared as is.
TINY = 1e-8


class _NoUpdate(Optimizer):
    """An optimizer that leaves the parameters alone, so that ``train_step``
    computes the gradients exactly as in training and stops there."""

    def _update(self, params, grads) -> None:
        pass


def _float64_copy(model) -> Sequential:
    """A new float64 model with the layers and the parameters of ``model``."""
    layers = [Dense(layer.in_features, layer.out_features, layer.activation,
                    bias=layer.use_bias, alpha=layer.alpha) for layer in model.layers]
    copy = Sequential(layers, dtype="float64", seed=0)
    # One buffer, the same layout (W then b, layer after layer): one copy.
    copy.param_buffer[...] = model.param_buffer
    return copy


def relative_error(analytic, numeric, tiny: float = TINY) -> np.ndarray:
    """Elementwise |a - n| / max(|a| + |n|, tiny).

    Between 0 (equal) and 1 (one of them is 0, or they have opposite signs);
    where both are below ``tiny`` it is their absolute difference / tiny.
    """
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), tiny)


def gradcheck(model, X, y, loss, eps: float = 1e-6) -> float:
    """Largest relative error between backprop and finite differences.

    The check runs on a float64 copy of ``model`` (same layers, same
    parameters), so it is as exact as it can be and never changes ``model``.
    Every parameter (all of W and b of every layer) is checked.

    Two backpropagated gradients are compared with the numerical one:

    - the public path, ``forward`` then ``loss.grad`` then ``backward`` (the
      README's "one step by hand");
    - the gradient ``train_step`` computes in training (the compiled plan,
      with the fused softmax/cross-entropy gradient where it applies), taken
      with an optimizer that does not update.

    The numerical gradient of parameter w is the central difference
    ``n = (L(w + eps) - L(w - eps)) / (2 eps)``, and the error of a backprop
    value ``a`` is ``|a - n| / max(|a| + |n|, 1e-8)``: 0 when they agree, 1
    when one is 0 or their signs differ.  Correct gradients give about 1e-7
    or less; activations with kinks (relu, leaky_relu, mae) can give a large
    error if a pre-activation lies within eps of the kink.  The binary step
    cannot be checked: its true derivative is 0 except at the jump.

    Parameters
    ----------
    model : tinycore.Sequential
    X : array_like (batch, in_features)
    y : array_like
        Targets, as for ``model.fit``.
    loss : str or tinycore.losses.Loss
    eps : float, default 1e-6
        Step of the central differences.

    Returns
    -------
    float
        The largest relative error over all parameters and both paths.

    Examples
    --------
    >>> import numpy as np, tinycore as tc
    >>> model = tc.Sequential([tc.Dense(3, 4, "tanh"), tc.Dense(4, 2, "softmax")], seed=0)
    >>> X = np.random.default_rng(0).normal(size=(5, 3)); y = [0, 1, 1, 0, 1]
    >>> tc.gradcheck(model, X, y, "cross_entropy") < 1e-6
    True
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"gradcheck takes a tinycore.Sequential, got {type(model).__name__}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
    loss = losses.get(loss)
    copy = _float64_copy(model)
    X = copy._check_X(X)
    target = loss.check_target(y, (X.shape[0], copy.out_features), copy.dtype)

    # Backprop, public path.
    out = copy.forward(X)
    copy.backward(loss.grad(out, target))
    by_backward = copy.grad_buffer.copy()

    # Backprop, training path.
    copy.compile(loss=loss, optimizer=_NoUpdate())
    copy.grad_buffer[...] = 0.0
    copy.train_step(X, target)
    by_train_step = copy.grad_buffer.copy()

    # Central differences over every parameter.
    params = copy.param_buffer
    numeric = np.empty_like(params)
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + eps
        up = loss.value(copy.forward(X), target)
        params[i] = saved - eps
        down = loss.value(copy.forward(X), target)
        params[i] = saved
        numeric[i] = (up - down) / (2 * eps)

    return float(max(relative_error(by_backward, numeric).max(),
                     relative_error(by_train_step, numeric).max()))
