"""Plain-NumPy formulas that tinycore's kernels are checked against.

Written for clarity, not speed, in float64.  Nothing here imports tinycore.
"""
import numpy as np


def numeric_grad(loss_fn, x, eps=1e-6):
    """Central differences of a scalar function with respect to array x (float64)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        up = loss_fn()
        x[idx] = saved - eps
        down = loss_fn()
        x[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad


# --- activations and their derivatives -------------------------------------


# --- losses and their gradients ---------------------------------------------


# --- a dense network, forward and backward ----------------------------------
