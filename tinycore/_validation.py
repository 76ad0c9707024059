"""Every check on user input, with its message, in one place.

The Cython kernels run without bounds checks, so nothing reaches them that has
not passed through here: right number of dimensions, a floating dtype (other
real dtypes are converted), finite values, a non-empty batch, matching sizes,
labels in range, and C-contiguous memory.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from tinycore import _simd

_plan = _simd.load("_plan")

FLOAT_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}

# BLAS takes its dimensions as 32-bit signed integers.
BLAS_INT_MAX = 2**31 - 1


def check_dtype(dtype) -> np.dtype:
    """Return the NumPy dtype for "float32" or "float64" (or the dtype objects)."""
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    # (Compare with "is": NumPy holds None == np.dtype("float64") to be true.)
    if resolved is None or dtype is None or resolved not in FLOAT_DTYPES.values():
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if value > BLAS_INT_MAX:
        raise ValueError(f"{name} must be at most {BLAS_INT_MAX}, got {value}")
    return int(value)


def check_real(value, name: str, *, low=None, low_inclusive=True) -> float:
    """Return ``value`` as a finite float, optionally bounded below, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:        # an int beyond the float range, such as 10**400
        raise ValueError(f"{name} must be finite, got an integer of "
                         f"{len(str(abs(value)))} digits") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None:
        if (value < low) if low_inclusive else (value <= low):
            bound = ">=" if low_inclusive else ">"
            raise ValueError(f"{name} must be {bound} {low}, got {value}")
    return value


def _as_array(data, name: str) -> np.ndarray:
    """Turn array-likes into an ndarray; reject what is not numeric data."""
    if data is None or isinstance(data, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array of numbers, got {type(data).__name__}")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be read as a numeric array: {exc}") from None
    return array


def _check_real_kind(array: np.ndarray, name: str) -> None:
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float), "
            f"got dtype {array.dtype}"
        )


def as_float_array(data, dtype: np.dtype, name: str, *, ndim: int | None = 2,
                   allow_empty: bool = False, check_finite: bool = True) -> np.ndarray:
    """Validate ``data`` and return it C-contiguous in ``dtype``.

    Parameters
    ----------
    data : array-like
        Real numbers (bool, integer or float dtypes are converted).
    dtype : numpy.dtype
        float32 or float64.
    name : str
        How the error messages call the argument.
    ndim : int or None
        Required number of dimensions (None: any).
    allow_empty : bool
        Whether an array with no element is accepted.
    check_finite : bool
        Whether to check here that every value is finite.  A kernel that
        makes the check itself, in the pass that reads the data, passes
        False and raises :func:`not_finite_error` when it reports a failure.

    Raises
    ------
    TypeError
        For non-numeric input (strings, objects, complex numbers).
    ValueError
        For the wrong number of dimensions, an empty array, or NaN/inf.
    """
    array = _as_array(data, name)
    _check_real_kind(array, name)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D, got a {array.ndim}-D array of shape {array.shape}"
        )
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {array.shape}); at least one sample is needed")
    # A dimension past the limit makes the size larger still, unless another
    # dimension is 0: the common case asks two numbers, not every dimension.
    if ((array.size > BLAS_INT_MAX or array.size == 0)
            and any(dim > BLAS_INT_MAX for dim in array.shape)):
        raise ValueError(f"{name} has a dimension larger than {BLAS_INT_MAX}: {array.shape}")
    if array.dtype == dtype and array.flags.c_contiguous:
        converted = array       # nothing to convert (saves the errstate's ~1 us a call)
    else:
        # Converting first means a float64 value too large for float32 is
        # caught as the infinity it becomes (quietly: the error below says it
        # better than NumPy's overflow warning).  order="C" keeps 0-d arrays
        # 0-d, where np.ascontiguousarray would make them 1-D.
        with np.errstate(over="ignore", invalid="ignore"):
            converted = np.asarray(array, dtype=dtype, order="C")
    converted = _behaved(converted)
    if check_finite and not all_finite(converted):
        raise not_finite_error(name, dtype)
    return converted


def not_finite_error(name: str, dtype: np.dtype) -> ValueError:
    """The error for an array ``name`` that holds NaN or infinity."""
    return ValueError(f"{name} contains NaN or infinity (in {np.dtype(dtype)})")


def all_finite(array: np.ndarray) -> bool:
    """Whether every element of a C-contiguous float32 or float64 array is finite.

    One pass in compiled code, without the GIL: ``np.isfinite(array).all()``
    would make a temporary boolean array as large as the data and read it
    again (an activation of 256 x 1024 float32 spent twice as long in that
    check as in the activation itself).
    """
    return bool(_plan.all_finite(array.reshape(-1)))


def _behaved(array: np.ndarray) -> np.ndarray:
    """``array``, copied if its memory is misaligned for its dtype.

    A view at an odd byte offset can be C-contiguous and of the right dtype,
    yet vectorised kernel loops may not read it; a copy is aligned.
    """
    return array if array.flags.aligned else array.copy()


def check_input(X, dtype: np.dtype, n_features: int, where: str) -> np.ndarray:
    """Validate a batch of samples for a layer or model expecting ``n_features``."""
    X = as_float_array(X, dtype, "X")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{where} expects X of shape (batch, {n_features}), got {X.shape}"
        )
    return X


def check_same_shape(array, expected_shape: tuple, dtype: np.dtype, name: str,
                     where: str) -> np.ndarray:
    """Validate a float array that must have exactly ``expected_shape``."""
    array = as_float_array(array, dtype, name)
    if array.shape != tuple(expected_shape):
        raise ValueError(
            f"{where} expects {name} of shape {tuple(expected_shape)}, got {array.shape}"
        )
    return array


def check_labels(labels: np.ndarray, n_classes: int, name: str = "y") -> np.ndarray:
    """Return integer class labels as C-contiguous int64, all in [0, n_classes)."""
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or np.any(labels != np.round(labels)):
            raise ValueError(
                f"{name} as class labels must be whole numbers in [0, {n_classes}), "
                "got non-integer values"
            )
    elif labels.dtype.kind not in "iu":
        raise TypeError(f"{name} as class labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{name} holds labels outside [0, {n_classes}): "
            f"min {labels.min()}, max {labels.max()}"
        )
    return _behaved(np.asarray(labels, dtype=np.int64, order="C"))


def check_batch_length(n_targets: int, n_samples: int, name: str = "y") -> None:
    """Raise unless predictions and targets hold the same number of samples."""
    if n_targets != n_samples:
        raise ValueError(
            f"{name} has {n_targets} samples but the predictions (or X) have {n_samples}"
        )


def check_name(name, table: dict, kind: str) -> str:
    """Return ``name`` if it is a key of ``table``; else list the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be given by name (a str), got {type(name).__name__}")
    if name not in table:
        valid = ", ".join(repr(key) for key in table)
        raise ValueError(f"unknown {kind} {name!r}; expected one of {valid}")
    return name


def output_like(reference: np.ndarray, out, name: str = "out") -> np.ndarray:
    """Return ``out`` checked to match ``reference``, or a new array like it."""
    if out is None:
        return np.empty_like(reference)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != reference.shape or out.dtype != reference.dtype:
        raise ValueError(
            f"{name} must have shape {reference.shape} and dtype {reference.dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    return out
