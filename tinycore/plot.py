"""Figures for learning how networks learn (needs matplotlib: ``pip install "tinycore[plot]"``).

==========================  ===================================================
function                    draws
==========================  ===================================================
``activations(names)``      each activation beside its derivative
``history(history)``        loss (and accuracy) per epoch
``gradient_flow(norms)``    each layer's gradient norm per epoch, log scale
``descent_path(...)``       the cost J(w) of fitting z = 2x, and the steps of w
==========================  ===================================================

Each function returns a :class:`matplotlib.figure.Figure` and, given
``path``, also saves it as a PNG.  The figures are made with the object API
(``matplotlib.figure.Figure``, rendered by Agg), never through ``pyplot``:
nothing global changes, no window opens, and it works without a display.
Importing tinycore does not import matplotlib; the first plot does.
"""
from __future__ import annotations

import numpy as np

__all__ = ["activations", "history", "gradient_flow", "descent_path", "INSTALL_HINT",
           "LINE_X", "LINE_SLOPE"]

#: What to run when matplotlib is missing.
INSTALL_HINT = 'pip install "tinycore[plot]"'

# The data of the seed's gradient-descent example: points on z = 2x (the same
# as tests/test_worked_examples.py and `python -m tinycore demo gradient_descent`).
LINE_X = (0.3, 0.4, 0.5)
LINE_SLOPE = 2.0


def _figure(**kwargs):
    """A new matplotlib Figure, not registered with pyplot."""
    try:
        import matplotlib  # noqa: F401  (raises ImportError if it is missing or blocked)
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            f"tinycore.plot needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None
    return Figure(**kwargs)


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        # A Figure made without pyplot renders with Agg when saved to PNG.
        fig.savefig(path, format="png", dpi=100)
    return fig


# -- activations -------------------------------------------------------------------

def _curves(name: str, z: np.ndarray, alpha: float):
    """(values, derivatives, label) of activation ``name`` on the grid z."""
    from tinycore import activations as act

    if name == "softmax":
        # Softmax needs a vector: show the first probability of softmax([z, 0]),
        # which is sigmoid(z), and its derivative dp0/dz = p0 (1 - p0).
        rows = np.column_stack([z, np.zeros_like(z)])
        values = act.softmax(rows)[:, 0]
        upstream = np.column_stack([np.ones_like(z), np.zeros_like(z)])
        slopes = act.softmax_grad(rows, upstream)[:, 0]
        return values, slopes, "softmax([z, 0])[0]"
    return (act.value(name, z, alpha=alpha), act.derivative(name, z, alpha=alpha), name)


def activations(names=None, path=None, *, z_range=(-6.0, 6.0), alpha: float = 0.1):
    """Each activation f(z) beside its derivative f'(z).

    Parameters
    ----------
    names : sequence of str, optional
        Activation names (default: all seven, ``tinycore.activations.NAMES``).
    path : str or path-like, optional
        Also save the figure there as a PNG.
    z_range : (float, float), default (-6, 6)
    alpha : float, default 0.1
        Leaky ReLU's slope for z < 0 (larger than the layer default 0.01 so
        that it can be seen).

    Returns
    -------
    matplotlib.figure.Figure
        One row per activation: f on the left, f' on the right.  Softmax
        is shown as the first output of softmax([z, 0]).
    """
    from tinycore.activations import NAMES, check_activation

    names = list(NAMES if names is None else ([names] if isinstance(names, str) else names))
    if not names:
        raise ValueError("names must list at least one activation")
    names = [check_activation(name) for name in names]
    fig = _figure(figsize=(8, 2.1 * len(names)))
    axes = fig.subplots(len(names), 2, squeeze=False)
    z = np.linspace(z_range[0], z_range[1], 401)
    for row, name in zip(axes, names):
        values, slopes, label = _curves(name, z, alpha)
        row[0].plot(z, values, color="tab:blue")
        row[0].set_title(label, fontsize=10)
        row[1].plot(z, slopes, color="tab:orange")
        row[1].set_title(f"derivative of {label}", fontsize=10)
        if name in ("sigmoid", "softmax"):
            # The teaching moment: never above 0.25, the source of vanishing gradients.
            row[1].axhline(0.25, color="gray", linestyle=":", linewidth=1)
            row[1].set_ylim(top=0.3)
            row[1].annotate("max 0.25", (0.45 * z[-1], 0.255), fontsize=8, va="bottom",
                            color="gray")
        if name == "step":
            row[1].set_title("derivative of step: 0 (undefined at 0)", fontsize=10)
        for ax in row:
            ax.axhline(0, color="black", linewidth=0.5)
            ax.axvline(0, color="black", linewidth=0.5)
            ax.set_xlabel("z", fontsize=8)
            ax.tick_params(labelsize=8)
    return _finish(fig, path)


# -- training curves ---------------------------------------------------------------

def _metrics(history) -> dict:
    """The metric dict of a History, or the dict itself."""
    metrics = getattr(history, "history", history)
    if not isinstance(metrics, dict):
        raise TypeError(f"expected a tinycore History or a dict of metric lists, "
                        f"got {type(history).__name__}")
    return metrics


def history(history, path=None, *, title=None):
    """Loss (left) and accuracy (right, if recorded) per epoch.

    Parameters
    ----------
    history : History, dict, or dict of name -> History
        What ``model.fit`` returned, its ``history.history`` dict, or several
        runs by name (e.g. ``{"sigmoid": h1, "relu": h2}``) drawn together.
    path : str or path-like, optional
        Also save the figure there as a PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(history, dict) and history and all(
            hasattr(value, "history") or isinstance(value, dict) for value in history.values()):
        runs = {str(name): _metrics(value) for name, value in history.items()}
    else:
        runs = {"": _metrics(history)}
    # Per-epoch scalars only: fit(track_gradients=True) also records per-layer
    # lists ("grad_norms", ...), which gradient_flow draws.
    keys = {key for metrics in runs.values() for key, values in metrics.items()
            if np.ndim(values) == 1}
    if not keys:
        raise ValueError("the history holds no metrics (was fit run?)")
    accuracy = sorted(key for key in keys if "acc" in key)
    other = sorted(key for key in keys if "acc" not in key)
    panels = [(other, "loss")] if other else []
    if accuracy:
        panels.append((accuracy, "accuracy"))
    fig = _figure(figsize=(5 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (names, ylabel) in zip(axes, panels):
        for run, metrics in runs.items():
            for key in names:
                if key not in metrics:
                    continue
                values = np.asarray(metrics[key], dtype=float)
                label = " ".join(part for part in (run, key) if part)
                ax.plot(np.arange(1, len(values) + 1), values, marker="." if len(values) < 30
                        else None, label=label)
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def _grad_norm_table(history_or_norms) -> np.ndarray:
    """(epochs, layers) array of gradient norms."""
    source = history_or_norms
    if hasattr(source, "history") or isinstance(source, dict):
        metrics = _metrics(source)
        if "grad_norms" not in metrics:
            raise ValueError("the history has no 'grad_norms': train with "
                             "fit(track_gradients=True), or pass the norms themselves")
        source = metrics["grad_norms"]
    try:
        table = np.asarray(source, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("gradient norms must be a list (per epoch) of lists (per layer) "
                         "of numbers, of equal lengths") from None
    if table.ndim == 1:
        table = table[None, :]          # one epoch
    if table.ndim != 2 or table.size == 0:
        raise ValueError(f"gradient norms must be a list (per epoch) of lists (per "
                         f"layer), got an array of shape {table.shape}")
    return table


def gradient_flow(history_or_norms, path=None, *, title=None):
    """Each layer's gradient norm per epoch, on a log scale.

    In a deep sigmoid network the first layers' curves lie orders of
    magnitude below the last layer's: the vanishing gradient.

    Parameters
    ----------
    history_or_norms : History, dict, or list of lists
        A History (or its dict) with ``"grad_norms"``, one list per epoch of
        one ``||dW||`` per layer; or such a list of lists itself (a single
        list is one epoch).
    path : str or path-like, optional
        Also save the figure there as a PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    table = _grad_norm_table(history_or_norms)
    # Zeros (a step layer, a dead layer) cannot be drawn on a log scale.
    shown = np.where(table > 0, table, np.nan)
    n_epochs, n_layers = table.shape
    fig = _figure(figsize=(6.5, 4))
    ax = fig.subplots()
    colors = _layer_colors(n_layers)
    epochs = np.arange(1, n_epochs + 1)
    for layer in range(n_layers):
        ax.plot(epochs, shown[:, layer], color=colors[layer], marker="o" if n_epochs < 30 else None,
                markersize=3, label=f"layer {layer}")
    if np.isfinite(shown).any():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    _integer_ticks(ax)
    ax.set_ylabel("||dW||")
    ax.set_title(title or "gradient norm per layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2 if n_layers > 6 else 1)
    return _finish(fig, path)


def _integer_ticks(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_colors(n: int):
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


# -- gradient descent on one weight --------------------------------------------------

def descent_path(loss_fn=None, w0: float = 0.2, lr: float = 0.4, steps: int = 10,
                 path=None, *, grad_fn=None, x=LINE_X, slope: float = LINE_SLOPE,
                 w_range=None, title=None):
    """The cost J(w) of one weight, with the steps of gradient descent drawn on it.

    By default J(w) = sum_i (z_i - w x_i)^2, the seed's cost for data on the
    line z = 2x (x = 0.3, 0.4, 0.5), and each step is
    w <- w - lr * dJ/dw with dJ/dw = -2 sum_i x_i (z_i - w x_i); the learning
    rate applies to this J (which is twice tinycore's ``sse``).  With
    S = sum x^2 = 0.5, w - 2 is multiplied by 1 - 2 lr S = 1 - lr each step:
    lr = 0.4 creeps towards w = 2, 1 < lr < 2 overshoots and oscillates while
    converging, lr > 2 diverges.

    Parameters
    ----------
    loss_fn : callable, optional
        Another cost J(w) of a float, instead of the default.
    w0 : float, default 0.2
    lr : float, default 0.4
    steps : int, default 10
    path : str or path-like, optional
        Also save the figure there as a PNG.
    grad_fn : callable, optional
        dJ/dw; by default the exact derivative of the default cost, or a
        central difference of ``loss_fn``.
    x : sequence of float, default (0.3, 0.4, 0.5)
        Inputs of the default cost; targets are ``slope * x``.
    slope : float, default 2
    w_range : (float, float), optional
        The w axis; by default it covers the path and the minimum.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if loss_fn is None:
        xs = np.asarray(x, dtype=float).ravel()
        zs = slope * xs

        def loss_fn(w):
            return float(np.sum((zs - w * xs) ** 2))

        if grad_fn is None:
            def grad_fn(w):
                return float(-2.0 * np.sum(xs * (zs - w * xs)))
        label = f"J(w) = sum (z - w x)^2, z = {slope:g}x"
    else:
        label = "J(w)"
    if grad_fn is None:
        def grad_fn(w, h=1e-6, f=loss_fn):
            return (f(w + h) - f(w - h)) / (2 * h)

    ws = [float(w0)]
    for _ in range(steps):
        w = ws[-1] - lr * grad_fn(ws[-1])
        if not np.isfinite(w) or abs(w) > 1e6:
            break                       # diverged: stop before the numbers blow up
        ws.append(float(w))
    costs = [loss_fn(w) for w in ws]

    if w_range is None:
        low, high = min(ws + [slope]), max(ws + [slope])
        margin = 0.15 * max(high - low, 1.0)
        w_range = (low - margin, high + margin)
    grid = np.linspace(w_range[0], w_range[1], 300)
    fig = _figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    ax.plot(grid, [loss_fn(w) for w in grid], color="tab:blue", label=label)
    ax.plot(ws, costs, color="tab:red", marker="o", markersize=4, linewidth=1,
            label=f"steps, lr = {lr:g}")
    ax.annotate("w0", (ws[0], costs[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("w")
    ax.set_ylabel("J(w)")
    ax.set_title(title or f"gradient descent from w0 = {w0:g}, lr = {lr:g}: "
                          f"w = {ws[-1]:.4g} after {len(ws) - 1} steps", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path)
