"""Weight initialisers: the starting point of gradient descent.

Each initialiser is a function ``(shape, rng) -> ndarray`` for a weight matrix
of shape (fan_in, fan_out), drawn in float64 from a NumPy ``Generator`` (so the
same seed gives the same weights on every machine, in both dtypes).  Biases
start at zero.

The scale matters: too small and the signal (and its gradient) shrinks layer
after layer, too large and sigmoid or tanh units saturate; both starve the
first layers of gradient.  Glorot and Bengio (2010) keep the variance of the
activations and of the gradients about equal across layers,
Var(W) = 2 / (fan_in + fan_out); He et al. (2015) double the variance of a
ReLU layer's input, Var(W) = 2 / fan_in, since ReLU zeroes half its inputs.

========================  =============================================
name                      distribution
========================  =============================================
glorot_uniform            U(-l, l), l = sqrt(6 / (fan_in + fan_out))
glorot_normal             N(0, 2 / (fan_in + fan_out))
he_uniform                U(-l, l), l = sqrt(6 / fan_in)
he_normal                 N(0, 2 / fan_in)
lecun_normal              N(0, 1 / fan_in)
normal                    N(0, 0.05^2)
uniform                   U(-0.05, 0.05)
zeros                     0 (every unit then learns the same thing)
========================  =============================================

``"auto"`` (the default of :class:`~tinycore.Dense`) picks ``he_uniform`` for
ReLU and leaky ReLU layers and ``glorot_uniform`` for the others.  The normal
distributions are not truncated (as PyTorch's ``xavier_normal_`` and
``kaiming_normal_``; Keras truncates).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from tinycore._validation import check_name

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
           "lecun_normal", "normal", "uniform", "zeros", "INITIALIZERS",
           "resolve", "initial_weights"]


def glorot_uniform(shape, rng):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(shape, rng):
    """N(0, 2 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    return rng.normal(0.0, np.sqrt(2.0 / (shape[0] + shape[1])), size=shape)


def he_uniform(shape, rng):
    """U(-l, l) with l = sqrt(6 / fan_in) (He et al., 2015), for ReLU layers."""
    limit = np.sqrt(6.0 / shape[0])
    return rng.uniform(-limit, limit, size=shape)


def he_normal(shape, rng):
    """N(0, 2 / fan_in) (He et al., 2015), for ReLU layers."""
    return rng.normal(0.0, np.sqrt(2.0 / shape[0]), size=shape)


def lecun_normal(shape, rng):
    """N(0, 1 / fan_in) (LeCun et al., 1998)."""
    return rng.normal(0.0, np.sqrt(1.0 / shape[0]), size=shape)


def normal(shape, rng):
    """N(0, 0.05^2), whatever the layer's size."""
    return rng.normal(0.0, 0.05, size=shape)


def uniform(shape, rng):
    """U(-0.05, 0.05), whatever the layer's size."""
    return rng.uniform(-0.05, 0.05, size=shape)


def zeros(shape, rng):
    """All zeros: every unit of a layer then computes, and learns, the same."""
    return np.zeros(shape)


#: Initialiser name -> function.
INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
    "normal": normal,
    "uniform": uniform,
    "zeros": zeros,
}


def resolve(init, activation: str) -> Callable:
    """The initialiser function for ``init`` (a name, "auto" or a callable).

    Examples
    --------
    >>> from tinycore import initializers
    >>> initializers.resolve("auto", "relu").__name__
    'he_uniform'
    """
    if callable(init):
        return init
    if init == "auto":
        return he_uniform if activation in ("relu", "leaky_relu") else glorot_uniform
    return INITIALIZERS[check_name(init, {"auto": None, **INITIALIZERS}, "initializer")]


def initial_weights(init, activation: str, shape: tuple, rng) -> np.ndarray:
    """Draw a weight matrix of ``shape`` and check what a callable returned."""
    weights = resolve(init, activation)(shape, rng)
    try:
        weights = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the initializer returned something that is not an array "
                        f"of real numbers: {exc}") from None
    if weights.shape != tuple(shape):
        raise ValueError(f"the initializer returned shape {weights.shape}, "
                         f"expected {tuple(shape)}")
    if not np.isfinite(weights).all():
        raise ValueError("the initializer returned NaN or infinity")
    return weights
