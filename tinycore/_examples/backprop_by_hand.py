"""One backpropagation step by hand, next to tinycore's.

The seed's network: one input x, two sigmoid neurons in a chain,

    z1 = w1 x + b1,   a1 = s(z1),   z2 = w2 a1 + b2,   a2 = s(z2),

with the error E = 1/2 (T - a2)^2 and s' = s (1 - s).  The chain rule gives

    dE/dz2 = -(T - a2) a2 (1 - a2)         dE/dw2 = dE/dz2 a1     dE/db2 = dE/dz2
    dE/dz1 = dE/dz2 w2 a1 (1 - a1)         dE/dw1 = dE/dz1 x      dE/db1 = dE/dz1

and gradient descent moves every parameter by -lr times its derivative.
With x = 0.1, w1 = 0.15, b1 = 0.4, w2 = 0.45, b2 = 0.65, T = 0.25, lr = 0.4:
w2 -> 0.427172, b2 -> 0.612098, w1 -> 0.149591, b1 -> 0.395914.

tinycore's ``sse`` loss is this E, so ``train_step`` with ``SGD(lr=0.4)``
makes exactly this step.
"""
from __future__ import annotations

import math

from tinycore._examples import ArgumentParser, fail, parse

__all__ = ["main", "by_hand", "by_tinycore", "DEFAULTS"]

#: The seed's numbers.
DEFAULTS = dict(x=0.1, w1=0.15, b1=0.4, w2=0.45, b2=0.65, target=0.25, lr=0.4)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def by_hand(x, w1, b1, w2, b2, target, lr) -> dict:
    """Forward pass, gradients and updated parameters, in plain Python floats."""
    z1 = w1 * x + b1
    a1 = _sigmoid(z1)
    z2 = w2 * a1 + b2
    a2 = _sigmoid(z2)
    E = 0.5 * (target - a2) ** 2
    delta2 = -(target - a2) * a2 * (1 - a2)     # dE/dz2
    delta1 = delta2 * w2 * a1 * (1 - a1)        # dE/dz1: back through w2 and s'(z1)
    grads = {"w2": delta2 * a1, "b2": delta2, "w1": delta1 * x, "b1": delta1}
    params = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return {"z1": z1, "a1": a1, "z2": z2, "a2": a2, "E": E,
            **{f"dE/d{name}": value for name, value in grads.items()},
            **{f"new {name}": params[name] - lr * grads[name] for name in params}}


def by_tinycore(x, w1, b1, w2, b2, target, lr) -> dict:
    """The same quantities from tinycore: forward, then one train_step."""
    import tinycore as tc

    model = tc.Sequential([tc.Dense(1, 1, "sigmoid"), tc.Dense(1, 1, "sigmoid")],
                          dtype="float64")
    first, second = model.layers
    first.W[...], first.b[...] = w1, b1
    second.W[...], second.b[...] = w2, b2
    model.compile(loss="sse", optimizer=tc.SGD(lr=lr))
    model.forward([[x]])                       # keeps Z and A of each layer
    values = {"z1": first.Z[0, 0], "a1": first.A[0, 0],
              "z2": second.Z[0, 0], "a2": second.A[0, 0]}
    values["E"] = model.train_step([[x]], [[target]])   # loss before the update
    # train_step leaves the gradients it used in dW, db.
    values.update({"dE/dw2": second.dW[0, 0], "dE/db2": second.db[0],
                   "dE/dw1": first.dW[0, 0], "dE/db1": first.db[0],
                   "new w1": first.W[0, 0], "new b1": first.b[0],
                   "new w2": second.W[0, 0], "new b2": second.b[0]})
    return {name: float(value) for name, value in values.items()}


def main(argv=None) -> int:
    """Print the hand computation beside tinycore's, and their differences."""
    parser = ArgumentParser(
        prog="tinycore demo backprop_by_hand",
        description="One backpropagation step on the seed's one-input, two-neuron "
                    "sigmoid chain, by hand and by tinycore.",
    )
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=float, default=value,
                            help=f"(default {value:g})")
    args, code = parse(parser, argv)
    if args is None:
        return code
    numbers = {name: getattr(args, name) for name in DEFAULTS}
    if not all(math.isfinite(value) for value in numbers.values()):
        return fail(parser, "every number must be finite")
    if numbers["lr"] <= 0:
        return fail(parser, f"--lr must be > 0, got {numbers['lr']:g}")
    hand = by_hand(**numbers)
    engine = by_tinycore(**numbers)
    print("One backpropagation step on a chain of two sigmoid neurons")
    print("  z1 = w1 x + b1, a1 = s(z1), z2 = w2 a1 + b2, a2 = s(z2), E = 1/2 (T - a2)^2")
    print("  " + ", ".join(f"{name} = {value:g}" for name, value in numbers.items()))
    print("  dE/dz2 = -(T - a2) a2 (1 - a2);  dE/dz1 = dE/dz2 w2 a1 (1 - a1)")
    print("  dE/dw2 = dE/dz2 a1, dE/db2 = dE/dz2, dE/dw1 = dE/dz1 x, dE/db1 = dE/dz1")
    print("  w <- w - lr dE/dw")
    print()
    print(f"{'quantity':<10}  {'by hand':>16}  {'tinycore':>16}  {'difference':>10}")
    worst = 0.0
    for name, value in hand.items():
        difference = abs(value - engine[name])
        worst = max(worst, difference)
        print(f"{name:<10}  {value:>16.10f}  {engine[name]:>16.10f}  {difference:>10.1e}")
    print()
    print(f"largest difference: {worst:.1e} "
          f"({'they agree' if worst < 1e-12 else 'they DISAGREE'})")
    return 0
