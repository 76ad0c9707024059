"""Look inside backpropagation: per-layer gradient norms and the vanishing gradient.

By the chain rule, the gradient that reaches layer k has been multiplied by
the derivative of every activation after it, and by every weight matrix
after it.  The sigmoid's derivative is at most 0.25 (tanh's at most 1, and
both are near 0 once a unit saturates), so in a chain of r sigmoid layers
with weights of size about 1 the first layers receive at most 0.25^r of the
gradient of the last: they learn far more slowly.  That is the
vanishing-gradient problem; ReLU-family activations, whose derivative is 1
wherever a unit is active, together with He initialisation, are the usual
remedy.

:func:`gradient_norms` reads ``||dW||`` of each layer after a backward pass;
:func:`vanishing_gradient_report` runs one forward and backward pass on a
batch and prints which layers receive too little gradient, and why.

Examples
--------
>>> import numpy as np, tinycore as tc
>>> model = tc.Sequential([tc.Dense(1, 1, "sigmoid") for _ in range(6)],
...                       dtype="float64", seed=0)
>>> for layer in model.layers:
...     layer.W[...] = 1.0; layer.b[...] = 0.0
>>> report = tc.diagnostics.vanishing_gradient_report(
...     model, [[0.5]], [[0.0]], loss="sse", file=False)
>>> report.flagged
[0, 1]
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np

from tinycore import losses

__all__ = ["gradient_norms", "vanishing_gradient_report", "GradientReport",
           "LayerGradient", "SATURATION_MARGIN", "DEFAULT_THRESHOLD"]

#: A sigmoid or tanh output closer than this to a bound of its range counts as
#: saturated: its derivative there is below about 0.01.
SATURATION_MARGIN = 0.01

#: A layer is flagged when the last layer's ||dW|| is more than this many
#: times its own.
DEFAULT_THRESHOLD = 100.0

# The bounds of each saturating activation's range.
_BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softmax": (0.0, 1.0)}

_REMEDY_SATURATING = ("use ReLU-family activations (relu, leaky_relu) in the hidden "
                      "layers, with He initialisation")
_REMEDY_INIT = ("He initialisation for ReLU layers (Var(W) = 2 / fan_in), "
                "Glorot for the others")


@dataclasses.dataclass
class LayerGradient:
    """One row of a :class:`GradientReport`: what one layer received.

    Attributes
    ----------
    index : int
        Position of the layer in the model, from 0 (the first layer).
    layer : str
        ``repr`` of the layer.
    activation : str
    grad_norm : float
        ``||dW||``, the L2 (Frobenius) norm of the layer's weight gradient.
    ratio : float
        ``grad_norm`` divided by the last layer's (1 for the last layer; NaN
        when the last layer received no gradient at all).
    inactive : float or None
        For sigmoid, tanh and softmax layers, the fraction of outputs within
        :data:`SATURATION_MARGIN` of a bound of the range (saturated); for
        ReLU layers, the fraction of units that are 0 for every sample of the
        batch (dead); for step layers 1.0 (its derivative is 0 everywhere);
        None for the others.
    inactive_kind : str or None
        "saturated", "dead", "step" or None, naming what ``inactive`` counts.
    flagged : bool
        Whether the last layer's gradient is more than ``threshold`` times
        larger than this layer's.
    cause, remedy : str
        The likely cause and the remedy, for a flagged layer ("" otherwise).
    """

    index: int
    layer: str
    activation: str
    grad_norm: float
    ratio: float
    inactive: float | None
    inactive_kind: str | None
    flagged: bool = False
    cause: str = ""
    remedy: str = ""


class GradientReport:
    """What :func:`vanishing_gradient_report` found; ``str(report)`` is the table.

    Attributes
    ----------
    rows : list of LayerGradient
        One per layer, first layer first.
    threshold : float
        The last-to-this-layer gradient ratio above which a layer is flagged.
    loss : float
        The loss of the batch.
    """

    def __init__(self, rows, threshold: float, loss: float):
        self.rows: list[LayerGradient] = list(rows)
        self.threshold = float(threshold)
        self.loss = float(loss)

    @property
    def flagged(self) -> list[int]:
        """Indices of the flagged layers."""
        return [row.index for row in self.rows if row.flagged]

    @property
    def norms(self) -> list[float]:
        """``||dW||`` of each layer, first layer first."""
        return [row.grad_norm for row in self.rows]

    @property
    def ratios(self) -> list[float]:
        """Each layer's ``||dW||`` over the last layer's."""
        return [row.ratio for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index) -> LayerGradient:
        return self.rows[index]

    def __str__(self) -> str:
        header = ("layer", "activation", "||dW||", "/ last", "inactive", "flag")
        body = []
        for row in self.rows:
            if row.inactive is None:
                inactive = "-"
            else:
                inactive = f"{100 * row.inactive:.0f}% {row.inactive_kind}"
            body.append((f"{row.index}", row.activation, f"{row.grad_norm:.3e}",
                         f"{row.ratio:.3e}", inactive, "<-- vanishing" if row.flagged else ""))
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
        lines = [f"gradient norms after one backward pass (loss {self.loss:.4g})"]
        lines.append("  ".join(text.ljust(width) for text, width in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * width for width in widths))
        for line in body:
            lines.append("  ".join(text.ljust(width)
                                   for text, width in zip(line, widths)).rstrip())
        flagged = [row for row in self.rows if row.flagged]
        if self.rows[-1].grad_norm == 0:
            lines.append("the last layer received no gradient (zero loss, a step output, "
                         "or saturated outputs): the ratios are undefined")
        elif not flagged:
            lines.append(f"no layer receives {self.threshold:g}x less gradient than "
                         "the last one")
        for row in flagged:
            lines.append(f"layer {row.index} {row.layer}: gradient {1 / row.ratio:.3g}x "
                         f"smaller than the last layer's")
            lines.append(f"  likely cause: {row.cause}")
            lines.append(f"  remedy: {row.remedy}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"GradientReport(layers={len(self.rows)}, flagged={self.flagged}, "
                f"threshold={self.threshold:g})")


def gradient_norms(model) -> list[float]:
    """The L2 norm of each layer's ``dW`` after the last backward pass.

    Parameters
    ----------
    model : tinycore.Sequential

    Returns
    -------
    list of float
        ``||dW||`` (Frobenius norm) of each Dense layer, first layer first.
        Zeros before any backward pass.

    Examples
    --------
    >>> import tinycore as tc
    >>> model = tc.Sequential([tc.Dense(2, 3), tc.Dense(3, 1)], seed=0)
    >>> tc.diagnostics.gradient_norms(model)
    [0.0, 0.0]
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"gradient_norms takes a tinycore.Sequential, "
                        f"got {type(model).__name__}")
    # Accumulate in float64 whatever the model's dtype.
    return [float(np.linalg.norm(np.asarray(layer.dW, dtype=np.float64)))
            for layer in layers]


def _inactive_fraction(layer) -> tuple[float | None, str | None]:
    """Fraction of saturated (sigmoid, tanh, softmax) or dead (ReLU) units."""
    A = np.asarray(layer.A, dtype=np.float64)
    if layer.activation in _BOUNDS:
        low, high = _BOUNDS[layer.activation]
        near = (A - low < SATURATION_MARGIN) | (high - A < SATURATION_MARGIN)
        return float(near.mean()), "saturated"
    if layer.activation == "relu":
        # A unit is dead on this batch if it is 0 for every sample: it then
        # passes no gradient back and its weights receive none.
        dead = ~(A > 0).any(axis=0)
        return float(dead.mean()), "dead"
    if layer.activation == "step":
        return 1.0, "step"
    return None, None


def _diagnose(rows: list[LayerGradient], index: int) -> tuple[str, str]:
    """Likely cause and remedy for a flagged layer ``index``.

    The gradient reaching layer k has passed through the derivatives of the
    activations of layers k..L-1 (the last layer's is folded into the loss
    gradient only for softmax + cross-entropy and sigmoid + BCE, but counting
    it does no harm here), so look there.
    """
    after = rows[index:]
    steps = [row.index for row in after if row.activation == "step"]
    if steps:
        return (f"binary step activation in layer {steps[-1]}: its derivative is 0, "
                "so no gradient flows back through it",
                "use a differentiable activation (relu, leaky_relu) instead of step")
    sigmoids = [row for row in after if row.activation == "sigmoid"]
    tanhs = [row for row in after if row.activation == "tanh"]
    saturated = max([row.inactive for row in sigmoids + tanhs] or [0.0])
    # Sigmoid' <= 0.25 shrinks the gradient even without saturation; tanh'
    # only does once units saturate (it is 1 at 0).
    if sigmoids or (tanhs and saturated >= 0.1):
        names = "/".join(sorted({row.activation for row in sigmoids + tanhs}))
        bound = "sigmoid' <= 0.25" if sigmoids else "tanh' near 0 when saturated"
        share = f"; up to {100 * saturated:.0f}% of units saturated" if saturated > 0 else ""
        return (f"saturating activation ({names} in {len(sigmoids) + len(tanhs)} of the "
                f"{len(after)} layers from here to the output; {bound}, multiplied "
                f"layer after layer by the chain rule{share})", _REMEDY_SATURATING)
    dead = [row for row in after if row.inactive_kind == "dead" and row.inactive
            and row.inactive >= 0.5]
    if dead:
        return (f"dead ReLU units ({100 * dead[0].inactive:.0f}% of layer "
                f"{dead[0].index} never active on this batch)",
                "leaky_relu, He initialisation, or a smaller learning rate")
    return ("poor initialisation: weights too small, so the backpropagated signal "
            "shrinks layer after layer", _REMEDY_INIT)


def vanishing_gradient_report(model, X, y, loss=None, file=None, *,
                              threshold: float = DEFAULT_THRESHOLD) -> GradientReport:
    """Backpropagate one batch and report how much gradient each layer receives.

    Runs ``model.forward(X)``, the loss gradient and ``model.backward`` (the
    steps of one training step, without the update), then compares each
    layer's ``||dW||`` with the last layer's.  Layers whose gradient is more
    than ``threshold`` times smaller are flagged with the likely cause
    (saturating sigmoid/tanh units, a binary step, dead ReLU units, or weights
    initialised too small) and the remedy (ReLU-family activations and He
    initialisation).

    The parameters are not changed.  The layers' ``dW``, ``db`` and their
    ``X``, ``Z``, ``A`` are overwritten by this pass, as by any backward pass.

    Parameters
    ----------
    model : tinycore.Sequential
    X : array_like (batch, in_features)
    y : array_like
        Targets, as for ``model.fit``.
    loss : str or tinycore.losses.Loss, optional
        Defaults to the loss the model was compiled with.
    file : file object, None or False, default None
        Where to print the table: None prints to ``sys.stdout``, False
        prints nothing.
    threshold : float, default 100
        Flag layers whose ``||dW||`` is below the last layer's divided by this.

    Returns
    -------
    GradientReport
        ``report.rows`` holds one :class:`LayerGradient` per layer;
        ``report.flagged`` the flagged indices.
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("give loss=... or compile the model first")
    loss = losses.get(loss)
    if not (threshold > 1):
        raise ValueError(f"threshold must be > 1, got {threshold!r}")
    out = model.forward(X)
    target = loss.check_target(y, out.shape, out.dtype)
    value = loss.value(out, target)
    # The public path of "one step by hand": dL/dA of the output, then the
    # chain rule through every layer.  (For softmax + cross-entropy this goes
    # through the softmax Jacobian instead of the fused (p - y) / B; the two
    # agree unless a probability is below 1e-12.)
    model.backward(loss.grad(out, target))
    norms = gradient_norms(model)
    last = norms[-1]
    rows = []
    for index, (layer, norm) in enumerate(zip(model.layers, norms)):
        ratio = norm / last if last > 0 else float("nan")
        inactive, kind = _inactive_fraction(layer)
        # Written as norm * threshold < last so that a layer with zero
        # gradient is flagged too (its ratio is 0).
        flagged = index < len(norms) - 1 and last > 0 and norm * threshold < last
        rows.append(LayerGradient(index, repr(layer), layer.activation, norm, ratio,
                                  inactive, kind, flagged))
    for row in rows:
        if row.flagged:
            row.cause, row.remedy = _diagnose(rows, row.index)
    report = GradientReport(rows, threshold, value)
    if file is not False:
        print(report, file=sys.stdout if file is None else file)
    return report
