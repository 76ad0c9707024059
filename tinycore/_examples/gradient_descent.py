"""Gradient descent on one weight: fitting z = 2x from w0 = 0.2.

The seed's example.  The data lie on the line z = 2x; the model is one
weight, z = w x (``tc.Dense(1, 1, bias=False)``), and the cost is

    J(w) = sum_i (z_i - w x_i)^2,    dJ/dw = -2 sum_i x_i (z_i - w x_i) = 2 S (w - 2),

with S = sum_i x_i^2.  Each step w <- w - lr dJ/dw therefore multiplies the
distance to the minimum by the same factor:

    w_{k+1} - 2 = (1 - 2 lr S) (w_k - 2).

With x = (0.3, 0.4, 0.5), S = 0.5 and the factor is 1 - lr:

- lr = 0.4: factor 0.6, w creeps up to 2 in ever smaller steps
  (w = 0.2, 0.92, 1.352, 1.6112, ...);
- 1 < lr < 2: the factor is negative, w jumps over 2 every step (overshoots)
  but the jumps shrink, so it still converges;
- lr > 2 = 1 / S: |factor| > 1, each jump is larger than the last: it diverges.

Which cost does the learning rate apply to?  The lr above is the seed's, on
J.  tinycore's ``sse`` loss is E = 1/2 sum (z - w x)^2 = J / 2, so
dE/dw = dJ/dw / 2 and a step of lr on J is a step of 2 lr on E: the example
trains with ``loss="sse"`` and ``SGD(lr=2 * lr)``, and prints J = 2 E.
"""
from __future__ import annotations

import os

import numpy as np

from tinycore._examples import ArgumentParser, fail, parse, positive_int

__all__ = ["main", "descend", "X", "SLOPE"]

#: The inputs; the targets are 2x.
X = np.array([[0.3], [0.4], [0.5]])
SLOPE = 2.0


def descend(w0: float, lr: float, steps: int) -> list[tuple[float, float]]:
    """Train z = w x with tinycore; return [(w_k, J(w_k)) for k = 0..steps].

    ``lr`` is the learning rate on J = sum (z - w x)^2.
    """
    import tinycore as tc

    z = SLOPE * X
    model = tc.Sequential([tc.Dense(1, 1, bias=False)], dtype="float64", seed=0)
    model.layers[0].W[...] = w0
    # sse is E = J / 2: the same step needs twice the learning rate.
    model.compile(loss="sse", optimizer=tc.SGD(lr=2 * lr))
    rows = []
    for _ in range(steps):
        w = float(model.layers[0].W[0, 0])
        E = model.train_step(X, z)          # the loss before the update
        rows.append((w, 2 * E))
    w = float(model.layers[0].W[0, 0])
    rows.append((w, 2 * model.evaluate(X, z)["loss"]))
    return rows


def _verdict(factor: float) -> str:
    if 0 <= factor < 1:
        return "converges: every step moves w closer to 2 from the same side"
    if -1 < factor < 0:
        return "overshoots: w jumps over 2 every step, but the jumps shrink, so it converges"
    if factor == -1:
        return "oscillates forever between two values"
    return "diverges: every jump over 2 is larger than the last"


def _path_for(path: str, lr: float) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}_lr{lr:g}{ext or '.png'}"


def main(argv=None) -> int:
    """Print w and J(w) step by step for three learning rates."""
    parser = ArgumentParser(
        prog="tinycore demo gradient_descent",
        description="Gradient descent on one weight, fitting z = 2x from w0 = 0.2 "
                    "(the seed's example).",
    )
    parser.add_argument("--w0", type=float, default=0.2, help="starting weight (0.2)")
    parser.add_argument("--lr", type=float, default=0.4,
                        help="learning rate on J = sum (z - w x)^2 (0.4)")
    parser.add_argument("--overshoot-lr", type=float, default=1.5,
                        help="a learning rate that overshoots but converges (1.5)")
    parser.add_argument("--diverge-lr", type=float, default=2.5,
                        help="a learning rate that diverges (2.5)")
    parser.add_argument("--steps", type=positive_int, default=10, help="steps per run (10)")
    parser.add_argument("--plot", metavar="PATH",
                        help="also save the descent path of each run as PNG "
                             "(PATH_lr<lr>.png; needs matplotlib)")
    args, code = parse(parser, argv)
    if args is None:
        return code
    for name in ("lr", "overshoot_lr", "diverge_lr"):
        value = getattr(args, name)
        if not (value > 0 and np.isfinite(value)):
            return fail(parser, f"--{name.replace('_', '-')} must be a number > 0, got {value}")
    if not np.isfinite(args.w0):
        return fail(parser, f"--w0 must be finite, got {args.w0}")

    S = float(np.sum(X ** 2))
    print("Gradient descent on one weight: fitting z = 2x with z = w x")
    print(f"data: x = {', '.join(f'{v:g}' for v in X.ravel())}; "
          f"z = {', '.join(f'{v:g}' for v in SLOPE * X.ravel())}")
    print("cost: J(w) = sum (z - w x)^2, dJ/dw = 2 S (w - 2), "
          f"S = sum x^2 = {S:g}")
    print("update: w <- w - lr dJ/dw, so w - 2 is multiplied by 1 - 2 lr S each step;")
    print(f"stable for 0 < lr < 1/S = {1 / S:g}")
    print("the learning rate is on J; tinycore's 'sse' loss is E = 1/2 sum (z - w x)^2 = J/2,")
    print("so each run trains tc.Dense(1, 1, bias=False) with loss='sse' and SGD(lr=2*lr).")
    for lr in (args.lr, args.overshoot_lr, args.diverge_lr):
        factor = 1 - 2 * lr * S
        print()
        print(f"lr = {lr:g} (SGD lr {2 * lr:g} on sse): factor 1 - 2 lr S = {factor:g}: "
              f"{_verdict(factor)}")
        print(f"{'step':>4}  {'w':>16}  {'J(w)':>16}")
        for k, (w, J) in enumerate(descend(args.w0, lr, args.steps)):
            print(f"{k:>4}  {w:>16.10g}  {J:>16.10g}")
        if args.plot:
            from tinycore import plot
            saved = _path_for(args.plot, lr)
            try:
                plot.descent_path(w0=args.w0, lr=lr, steps=args.steps, path=saved)
            except (ImportError, OSError) as exc:
                return fail(parser, f"cannot save the plot: {exc}")
            print(f"descent path saved to {saved}")
    return 0
