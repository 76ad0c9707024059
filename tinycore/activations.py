"""The seven activation functions of a dense layer, and their derivatives.

Every elementwise activation ``f`` has two public functions: ``f(z)`` gives the
value and ``f_grad(z)`` the derivative f'(z), both elementwise, for an array of
any shape.  Softmax acts on rows, so it has ``softmax(z)`` and
``softmax_grad(z, grad)``, the product of its Jacobian with an upstream
gradient (what backpropagation needs).

===========  ======================  ============================  =============
name         f(z)                    f'(z)                         range of f
===========  ======================  ============================  =============
sigmoid      1 / (1 + exp(-z))       f(z) (1 - f(z)) <= 0.25       (0, 1)
tanh         tanh(z)                 1 - f(z)^2 <= 1               (-1, 1)
relu         max(0, z)               1 if z > 0 else 0             [0, inf)
leaky_relu   z if z > 0 else a z     1 if z > 0 else a             (-inf, inf)
linear       z                       1                             (-inf, inf)
step         1 if z >= 0 else 0      0                             {0, 1}
softmax      exp(z_i) / sum exp(z)   diag(p) - p p^T (Jacobian)    (0, 1)
===========  ======================  ============================  =============

The small derivatives of sigmoid and tanh, multiplied layer after layer by
backpropagation, are the vanishing-gradient problem; ReLU's derivative is
exactly 1 wherever the unit is active.  The binary step's derivative is 0
everywhere (and undefined at 0), so a step layer passes no gradient back:
it cannot learn by gradient descent, and neither can any layer before it.
"""
from __future__ import annotations

import numpy as np

from tinycore import _simd
from tinycore._validation import (as_float_array, check_name, check_real, not_finite_error,
                                  output_like)

_activations = _simd.load("_activations")

#: Activation name -> kernel code (the ``Activation`` enum of ``_activations.pxd``).
CODES = {
    "linear": 0,
    "sigmoid": 1,
    "tanh": 2,
    "relu": 3,
    "leaky_relu": 4,
    "step": 5,
    "softmax": 6,
}

#: Every activation name, in the order of the table above.
NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "linear", "step", "softmax")

#: The elementwise activations, those with an ``f_grad(z)``.
ELEMENTWISE = ("sigmoid", "tanh", "relu", "leaky_relu", "linear", "step")

__all__ = [
    "NAMES", "ELEMENTWISE", "CODES", "check_activation",
    "sigmoid", "sigmoid_grad", "tanh", "tanh_grad", "relu", "relu_grad",
    "leaky_relu", "leaky_relu_grad", "linear", "linear_grad", "step", "step_grad",
    "softmax", "softmax_grad", "value", "derivative",
]


def check_activation(name) -> str:
    """Return ``name`` if it is a known activation, else raise ValueError listing them."""
    return check_name(name, CODES, "activation")


def _float_dtype_of(data) -> np.dtype:
    # float32 stays float32; every other real dtype is computed in float64.
    dtype = getattr(data, "dtype", None)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _as_rows(z, name: str) -> tuple[np.ndarray, tuple]:
    """Any-shape real array -> (2-D C-contiguous float array, original shape).

    Not checked for NaN or infinity here: the kernel checks the values in the
    pass that computes the activation, and :func:`_computed` raises.
    """
    array = as_float_array(z, _float_dtype_of(z), name, ndim=None, allow_empty=True,
                           check_finite=False)
    return array.reshape(1, -1), array.shape


def _computed(out: np.ndarray, input_was_finite: bool, name: str) -> np.ndarray:
    """``out``, if the kernel that wrote it found its input ``name`` finite."""
    if not input_was_finite:
        raise not_finite_error(name, out.dtype)
    return out


def value(name: str, z, *, alpha: float = 0.01) -> np.ndarray:
    """Apply the activation called ``name`` to ``z``.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    z : array_like
        Pre-activations.  Elementwise activations take any shape; softmax
        takes a 1-D vector or a 2-D array of rows.
    alpha : float, default 0.01
        Slope of leaky ReLU for z < 0 (ignored by the others).

    Returns
    -------
    numpy.ndarray
        Same shape as ``z``; float32 for float32 input, else float64.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.activations.value("relu", [-1.0, 0.0, 2.0])
    array([0., 0., 2.])
    """
    check_activation(name)
    alpha = check_real(alpha, "alpha", low=0.0)
    if name == "softmax":
        return softmax(z)
    rows, shape = _as_rows(z, "z")
    out = np.empty_like(rows)
    finite = _activations.activation_value(CODES[name], alpha, rows, out)
    return _computed(out, finite, "z").reshape(shape)


def derivative(name: str, z, *, alpha: float = 0.01) -> np.ndarray:
    """Derivative f'(z) of the elementwise activation ``name``, at ``z``.

    Softmax is not elementwise: use :func:`softmax_grad`.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.activations.derivative("sigmoid", [0.0])
    array([0.25])
    """
    check_activation(name)
    if name == "softmax":
        raise ValueError(
            "softmax has no elementwise derivative; use softmax_grad(z, grad), "
            "its Jacobian-vector product"
        )
    alpha = check_real(alpha, "alpha", low=0.0)
    rows, shape = _as_rows(z, "z")
    out = np.empty_like(rows)
    finite = _activations.activation_derivative(CODES[name], alpha, rows, out)
    return _computed(out, finite, "z").reshape(shape)


def sigmoid(z) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-z)), elementwise; stable for any finite z.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.activations.sigmoid([0.0])
    array([0.5])
    """
    return value("sigmoid", z)


def sigmoid_grad(z) -> np.ndarray:
    """Derivative of the sigmoid, s(z) (1 - s(z)); at most 0.25 (at z = 0)."""
    return derivative("sigmoid", z)


def tanh(z) -> np.ndarray:
    """Hyperbolic tangent, elementwise, in (-1, 1)."""
    return value("tanh", z)


def tanh_grad(z) -> np.ndarray:
    """Derivative of tanh, 1 - tanh(z)^2; at most 1 (at z = 0)."""
    return derivative("tanh", z)


def relu(z) -> np.ndarray:
    """Rectified linear unit max(0, z), elementwise.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.activations.relu([-2.0, 3.0])
    array([0., 3.])
    """
    return value("relu", z)


def relu_grad(z) -> np.ndarray:
    """Derivative of ReLU: 1 where z > 0, else 0 (0 at z = 0 by convention)."""
    return derivative("relu", z)


def leaky_relu(z, alpha: float = 0.01) -> np.ndarray:
    """Leaky ReLU: z where z > 0, else ``alpha * z``."""
    return value("leaky_relu", z, alpha=alpha)


def leaky_relu_grad(z, alpha: float = 0.01) -> np.ndarray:
    """Derivative of leaky ReLU: 1 where z > 0, else ``alpha`` (``alpha`` at 0)."""
    return derivative("leaky_relu", z, alpha=alpha)


def linear(z) -> np.ndarray:
    """Identity activation: the layer stays linear."""
    return value("linear", z)


def linear_grad(z) -> np.ndarray:
    """Derivative of the identity: 1 everywhere."""
    return derivative("linear", z)


def step(z) -> np.ndarray:
    """Binary step: 1 where z >= 0, else 0.

    Its derivative is 0 everywhere (see :func:`step_grad`), so a layer with
    this activation cannot learn by gradient descent.
    """
    return value("step", z)


def step_grad(z) -> np.ndarray:
    """Derivative of the binary step: 0 everywhere.

    Mathematically it is undefined at z = 0; tinycore uses 0 there too.  A
    zero derivative means backpropagation sends nothing through a step layer.
    """
    return derivative("step", z)


def _softmax_rows(z, name: str) -> tuple[np.ndarray, tuple]:
    array = as_float_array(z, _float_dtype_of(z), name, ndim=None, check_finite=False)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"softmax takes a 1-D vector or a 2-D array of rows, got {array.ndim}-D "
            f"of shape {array.shape}"
        )
    return array.reshape(-1, array.shape[-1]), array.shape


def softmax(z) -> np.ndarray:
    """Row-wise softmax exp(z_i) / sum_j exp(z_j).

    The row maximum is subtracted before exponentiating, so logits of 1e4 give
    exact probabilities instead of inf / inf.

    Parameters
    ----------
    z : array_like
        A 1-D vector or a 2-D array whose rows are normalised separately.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.activations.softmax([0.0, 0.0])
    array([0.5, 0.5])
    """
    rows, shape = _softmax_rows(z, "z")
    out = np.empty_like(rows)
    finite = _activations.activation_value(CODES["softmax"], 0.0, rows, out)
    return _computed(out, finite, "z").reshape(shape)


def softmax_grad(z, grad) -> np.ndarray:
    """Vector-Jacobian product of softmax: dL/dz given ``grad`` = dL/dsoftmax(z).

    For each row, with p = softmax(z): dL/dz_j = p_j (grad_j - sum_k grad_k p_k).

    Parameters
    ----------
    z : array_like
        Pre-activations, 1-D or 2-D.
    grad : array_like
        Upstream gradient of the same shape.
    """
    rows, shape = _softmax_rows(z, "z")
    upstream = as_float_array(grad, rows.dtype, "grad", ndim=None)
    if upstream.shape != shape:
        raise ValueError(f"grad must have the shape of z, {shape}; got {upstream.shape}")
    prob = np.empty_like(rows)
    _computed(prob, _activations.activation_value(CODES["softmax"], 0.0, rows, prob), "z")
    out = output_like(prob, None)
    _activations.activation_backward(CODES["softmax"], 0.0, prob,
                                     upstream.reshape(rows.shape), out)
    return out.reshape(shape)
