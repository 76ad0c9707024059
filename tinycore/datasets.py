"""Small data sets generated on the spot, so that nothing is downloaded."""
from __future__ import annotations

import numpy as np

from tinycore._validation import check_positive_int, check_real

__all__ = ["make_spirals", "make_moons", "make_line"]


def make_spirals(n_samples: int = 300, n_classes: int = 3, noise: float = 0.2,
                 seed: int | None = 0, *, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals, one arm per class: not linearly separable.

    Parameters
    ----------
    n_samples : int, default 300
        Total number of points, split evenly between the classes (the first
        classes take the remainder).
    n_classes : int, default 3
    noise : float, default 0.2
        Standard deviation of the Gaussian noise added to the angle.
    seed : int or None, default 0
    shuffle : bool, default True
        Mix the classes (as scikit-learn's generators do); otherwise the
        samples come class by class, and any split by position, such as
        ``fit(validation_split=...)``, would hold out whole classes.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    y : ndarray of shape (n_samples,), int64 labels in [0, n_classes)

    Examples
    --------
    >>> import tinycore as tc
    >>> X, y = tc.datasets.make_spirals(6, n_classes=2, shuffle=False)
    >>> X.shape, y.tolist()
    ((6, 2), [0, 0, 0, 1, 1, 1])
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    n_classes = check_positive_int(n_classes, "n_classes")
    noise = check_real(noise, "noise", low=0.0)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), _split(n_samples, n_classes))
    radius = np.concatenate([np.linspace(0.05, 1.0, count)
                             for count in _split(n_samples, n_classes)])
    angle = (y * 2 * np.pi / n_classes + radius * 4.0
             + rng.normal(0.0, noise, n_samples))
    X = np.column_stack([radius * np.sin(angle), radius * np.cos(angle)])
    return _maybe_shuffle(X, y.astype(np.int64), rng, shuffle)


def make_moons(n_samples: int = 200, noise: float = 0.1,
               seed: int | None = 0, *, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles in 2-D, labels 0 and 1 (mixed unless
    ``shuffle=False``).

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    y : ndarray of shape (n_samples,), int64
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    noise = check_real(noise, "noise", low=0.0)
    rng = np.random.default_rng(seed)
    n_upper, n_lower = _split(n_samples, 2)
    upper = np.linspace(0, np.pi, n_upper)
    lower = np.linspace(0, np.pi, n_lower)
    X = np.concatenate([
        np.column_stack([np.cos(upper), np.sin(upper)]),
        np.column_stack([1 - np.cos(lower), 0.5 - np.sin(lower)]),
    ])
    X += rng.normal(0.0, noise, X.shape)
    y = np.repeat(np.arange(2), [n_upper, n_lower])
    return _maybe_shuffle(X, y.astype(np.int64), rng, shuffle)


def make_line(n_samples: int = 10, slope: float = 2.0,
              seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on the line z = slope * x through the origin, x uniform in [-1, 1].

    The data of the gradient-descent example: one weight w, cost
    J(w) = sum (z - w x)^2, minimum at w = slope.

    Returns
    -------
    x : ndarray of shape (n_samples, 1), float64
    z : ndarray of shape (n_samples, 1), float64
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    slope = check_real(slope, "slope")
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (n_samples, 1))
    return x, slope * x


def _maybe_shuffle(X, y, rng, shuffle):
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {type(shuffle).__name__}")
    if not shuffle:
        return X, y
    order = rng.permutation(len(y))
    return X[order], y[order]


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]
