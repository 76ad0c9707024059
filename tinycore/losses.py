"""Loss functions: a value to minimise and its gradient with respect to the prediction.

=======================  ==========================================  =====================
name                     value                                        gradient dL/da
=======================  ==========================================  =====================
mse                      mean over all elements of (a - t)^2          2 (a - t) / N
sse                      1/2 sum over all elements of (t - a)^2       a - t
mae                      mean over all elements of |a - t|            sign(a - t) / N
binary_cross_entropy     mean of -[t log a + (1 - t) log(1 - a)]      (a - t) / (a (1 - a) N)
cross_entropy            mean over rows of -log a[label]              -1 / (a[label] B)
=======================  ==========================================  =====================

N is the number of elements, B the number of rows (the batch).  ``sse`` is the
classic error of backpropagation, E = 1/2 sum (T - a)^2, whose derivative has no
factor 2.  At probabilities of exactly 0 or 1 the logs are clamped at -100 and
the gradients' denominators at 1e-12, as PyTorch does.

When a model ends in softmax and is trained with ``cross_entropy`` (or ends in
sigmoid with ``binary_cross_entropy``), its backward pass skips both the loss
gradient and the activation's Jacobian and uses the fused gradient with respect
to the pre-activation, (a - t) / B (or / N), computed from the logits without
any log of 0.
"""
from __future__ import annotations

import numpy as np

from tinycore import _simd
from tinycore._validation import (
    _as_array, as_float_array, check_batch_length, check_labels, check_name,
)

_losses = _simd.load("_losses")

__all__ = ["Loss", "MSE", "SSE", "MAE", "BinaryCrossEntropy", "CrossEntropy",
           "LOSSES", "get"]


def _float_dtype_of(data) -> np.dtype:
    dtype = getattr(data, "dtype", None)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


class Loss:
    """Base class: a loss has a ``name``, a ``value`` and a ``grad``.

    Subclasses implement ``_value_sum`` and ``_grad`` on validated arrays;
    ``value`` and ``grad`` validate, then call them.
    """

    #: Registry name (``tinycore.losses.get(name)``).
    name = ""
    #: Whether the targets are classes (accuracy is then reported).
    is_classification = False
    #: Output activation whose Jacobian this loss can fold into its gradient.
    fuses_with = None

    def value(self, pred, target) -> float:
        """Loss of the predictions ``pred`` (batch, outputs) against ``target``.

        Returns
        -------
        float
        """
        pred, target = self.check(pred, target)
        return float(self._value_sum(pred, target) / self._denominator(pred.shape))

    def grad(self, pred, target) -> np.ndarray:
        """Gradient of :meth:`value` with respect to ``pred``; same shape as ``pred``."""
        pred, target = self.check(pred, target)
        out = np.empty_like(pred)
        self._grad(1.0 / self._denominator(pred.shape), pred, target, out)
        return out

    def check(self, pred, target) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``pred`` and ``target``; return them converted for a kernel.

        Float32 predictions are kept in float32; others are computed in float64.
        """
        pred = as_float_array(pred, _float_dtype_of(pred), "pred")
        self._check_pred(pred)
        return pred, self.check_target(target, pred.shape, pred.dtype)

    def _check_pred(self, pred: np.ndarray) -> None:
        pass

    def check_target(self, target, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """Validate ``target`` for predictions of ``shape``; return it converted.

        Regression targets have the predictions' shape, or (batch,) when
        there is one output; they are converted to ``dtype``.
        """
        target = as_float_array(target, dtype, "target", ndim=None)
        check_batch_length(target.shape[0] if target.ndim else 0, shape[0], "target")
        if target.ndim == 1 and shape[1] == 1:
            target = target.reshape(-1, 1)
        if target.shape != tuple(shape):
            raise ValueError(
                f"{self.name} expects target of shape {tuple(shape)} (like the "
                f"predictions), got {target.shape}"
            )
        return target

    def _denominator(self, shape: tuple) -> float:
        return float(np.prod(shape))     # mean over all elements

    def _fused(self, logits, pred, target, dz) -> float:
        """Loss value from the logits, and dL/dlogits written into ``dz``.

        Only for a model whose output activation is ``fuses_with``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSE(Loss):
    """Mean squared error, the mean over all elements of (pred - target)^2.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.losses.MSE().value([[1.0, 2.0]], [[0.0, 0.0]])   # (1 + 4) / 2
    2.5
    """

    name = "mse"

    def _value_sum(self, pred, target):
        return _losses.squared_error_sum(pred, target)

    def _grad(self, scale, pred, target, out):
        _losses.scaled_difference(2.0 * scale, pred, target, out)


class SSE(Loss):
    """Half the sum of squared errors, E = 1/2 sum (target - pred)^2.

    The error of classic backpropagation: its gradient is simply pred - target.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.losses.SSE().value([[1.0, 2.0]], [[0.0, 0.0]])   # (1 + 4) / 2
    2.5
    """

    name = "sse"

    def _value_sum(self, pred, target):
        return 0.5 * _losses.squared_error_sum(pred, target)

    def _grad(self, scale, pred, target, out):
        _losses.scaled_difference(1.0, pred, target, out)

    def _denominator(self, shape):
        return 1.0                       # a sum, not a mean


class MAE(Loss):
    """Mean absolute error, the mean over all elements of |pred - target|.

    Its gradient is sign(pred - target) / N, taken as 0 where they are equal.
    """

    name = "mae"

    def _value_sum(self, pred, target):
        return _losses.absolute_error_sum(pred, target)

    def _grad(self, scale, pred, target, out):
        _losses.scaled_sign_difference(scale, pred, target, out)


def _check_probabilities(array: np.ndarray, name: str) -> None:
    if array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in "
            f"[{array.min():g}, {array.max():g}]"
        )


class BinaryCrossEntropy(Loss):
    """Mean binary cross-entropy of probabilities ``pred`` against targets in [0, 1].

    Use it after a sigmoid output layer: the model then uses the fused,
    stable gradient (pred - target) / N with respect to the logits.
    """

    name = "binary_cross_entropy"
    is_classification = True
    fuses_with = "sigmoid"

    def _check_pred(self, pred):
        _check_probabilities(pred, "pred")

    def check_target(self, target, shape, dtype):
        target = super().check_target(target, shape, dtype)
        _check_probabilities(target, "target")
        return target

    def _value_sum(self, pred, target):
        return _losses.binary_cross_entropy_sum(pred, target)

    def _grad(self, scale, pred, target, out):
        _losses.binary_cross_entropy_grad(scale, pred, target, out)

    def _fused(self, logits, pred, target, dz):
        denominator = self._denominator(pred.shape)
        total = _losses.sigmoid_binary_cross_entropy(1.0 / denominator, logits, pred, target, dz)
        return total / denominator


class CrossEntropy(Loss):
    """Mean over the batch of -log pred[label], for rows of class probabilities.

    Targets are integer labels of shape (batch,) in [0, classes), or rows of
    shape (batch, classes) of non-negative weights: one-hot, or a distribution.

    Use it after a softmax output layer: the model then uses the fused,
    stable gradient (softmax(z) - y) / batch with respect to the logits z
    (for target rows that do not sum to 1, (softmax(z) * sum(y) - y) / batch).

    Examples
    --------
    >>> import tinycore as tc
    >>> round(tc.losses.CrossEntropy().value([[0.5, 0.5]], [1]), 6)   # -log 0.5
    0.693147
    """

    name = "cross_entropy"
    is_classification = True
    fuses_with = "softmax"

    def _check_pred(self, pred):
        _check_probabilities(pred, "pred")

    def check_target(self, target, shape, dtype):
        target_array = _as_array(target, "target")
        if target_array.ndim == 1:
            check_batch_length(target_array.shape[0], shape[0], "target")
            return check_labels(target_array, shape[1], "target")
        target = as_float_array(target_array, dtype, "target")
        check_batch_length(target.shape[0], shape[0], "target")
        if target.shape != tuple(shape):
            raise ValueError(
                f"cross_entropy expects integer labels of shape ({shape[0]},) "
                f"or target rows of shape {tuple(shape)}, got {target.shape}"
            )
        if target.min() < 0:
            raise ValueError("cross_entropy target rows must be non-negative")
        return target

    def _value_sum(self, pred, target):
        if target.ndim == 1:
            return _losses.cross_entropy_labels_sum(pred, target)
        return _losses.cross_entropy_rows_sum(pred, target)

    def _grad(self, scale, pred, target, out):
        if target.ndim == 1:
            _losses.cross_entropy_labels_grad(scale, pred, target, out)
        else:
            _losses.cross_entropy_rows_grad(scale, pred, target, out)

    def _denominator(self, shape):
        return float(shape[0])           # mean over the batch

    def _fused(self, logits, pred, target, dz):
        denominator = self._denominator(pred.shape)
        if target.ndim == 1:
            total = _losses.softmax_cross_entropy_labels(1.0 / denominator, logits, pred,
                                                         target, dz)
        else:
            total = _losses.softmax_cross_entropy_rows(1.0 / denominator, logits, pred,
                                                       target, dz)
        return total / denominator


#: Loss name -> class.
LOSSES = {
    cls.name: cls for cls in (MSE, SSE, MAE, BinaryCrossEntropy, CrossEntropy)
}


def get(loss) -> Loss:
    """Return a loss object from its name, or ``loss`` itself if it is one.

    Parameters
    ----------
    loss : str or Loss
        One of ``"mse"``, ``"sse"``, ``"mae"``, ``"binary_cross_entropy"``,
        ``"cross_entropy"``, or a :class:`Loss` instance.

    Examples
    --------
    >>> import tinycore as tc
    >>> tc.losses.get("mse")
    MSE()
    """
    if isinstance(loss, Loss):
        return loss
    return LOSSES[check_name(loss, LOSSES, "loss")]()
