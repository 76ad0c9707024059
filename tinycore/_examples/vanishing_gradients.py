"""The vanishing gradient: ten sigmoid layers against ten ReLU layers.

By the chain rule the gradient reaching layer k has been multiplied by the
derivative of every activation after it.  sigmoid' = s (1 - s) <= 0.25, so
through r sigmoid layers with weights of size about 1 the gradient shrinks
to at most 0.25^r of the last layer's (0.25^9 = 3.8e-6 for the first of ten
layers): the first layers barely learn.  ReLU's derivative is 1 wherever a
unit is active; with He initialisation (Var(W) = 2 / fan_in, which makes up
for the half of the units that ReLU zeroes) the gradient reaches the first
layer at about the size it left the last.

Both networks here have the same shape (2 inputs, nine hidden layers of
``--width`` units, one sigmoid output trained with binary cross-entropy),
the same data (two moons) and the same training; only the hidden activation
and the initialisation differ.  The example prints each layer's ||dW|| before
training, the first/last ratio beside the 0.25^r bound, the vanishing-gradient
report of tinycore.diagnostics, and both loss curves.
"""
from __future__ import annotations

import inspect
import os

import numpy as np

from tinycore._examples import ArgumentParser, fail, parse, positive_float, positive_int

__all__ = ["main", "build", "gradient_norms_on", "DEPTH"]

#: Number of Dense layers, the output layer included.
DEPTH = 10


def _has_init() -> bool:
    import tinycore as tc
    return "init" in inspect.signature(tc.Dense).parameters


def build(activation: str, width: int, seed: int, depth: int = DEPTH):
    """A ``depth``-layer network: hidden layers of ``activation``, sigmoid output.

    Sigmoid networks start from Glorot-uniform weights, ReLU networks from
    He-uniform weights (with ``Dense(init=...)`` when tinycore has it, else
    by rescaling the Glorot weights in place: the He limit sqrt(6 / fan_in)
    is sqrt((fan_in + fan_out) / fan_in) times the Glorot one).
    """
    import tinycore as tc

    init = "he_uniform" if activation in ("relu", "leaky_relu") else "glorot_uniform"
    sizes = [2] + [width] * (depth - 1) + [1]
    extra = {"init": init} if _has_init() else {}
    layers = [tc.Dense(sizes[i], sizes[i + 1], activation, **extra) for i in range(depth - 1)]
    output_init = {"init": "glorot_uniform"} if extra else {}
    layers.append(tc.Dense(sizes[-2], 1, "sigmoid", **output_init))
    model = tc.Sequential(layers, dtype="float64", seed=seed)
    if not extra and init == "he_uniform":
        # No init= on Dense yet: turn Glorot-uniform into He-uniform by hand.
        for layer in model.layers[:-1]:
            fan_in, fan_out = layer.W.shape
            layer.W[...] *= np.sqrt((fan_in + fan_out) / fan_in)
    return model


def gradient_norms_on(model, X, y) -> list[float]:
    """||dW|| of each layer for one backward pass over (X, y); no update."""
    from tinycore import diagnostics
    return diagnostics.vanishing_gradient_report(model, X, y, file=False).norms


def _train(model, X, y, epochs, batch_size):
    """Train epoch by epoch, measuring the gradient norms after each epoch."""
    record = {"loss": [], "accuracy": [], "grad_norms": []}
    for _ in range(epochs):
        history = model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
        record["loss"].append(history.history["loss"][-1])
        record["accuracy"].append(history.history["accuracy"][-1])
        record["grad_norms"].append(gradient_norms_on(model, X, y))
    return record


def main(argv=None) -> int:
    """Compare a deep sigmoid network with a deep ReLU network."""
    parser = ArgumentParser(
        prog="tinycore demo vanishing_gradients",
        description="A 10-layer sigmoid network against the same with ReLU and He "
                    "initialisation: per-layer gradient norms and loss curves.",
    )
    parser.add_argument("--epochs", type=positive_int, default=20, help="(20)")
    parser.add_argument("--samples", type=positive_int, default=400,
                        help="points of the two-moons data, 3/4 for training (400)")
    parser.add_argument("--width", type=positive_int, default=16,
                        help="units per hidden layer (16)")
    parser.add_argument("--lr", type=positive_float, default=0.1, help="SGD learning rate (0.1)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="(32)")
    parser.add_argument("--seed", type=int, default=0, help="(0)")
    parser.add_argument("--plot", metavar="PATH",
                        help="save the loss curves to PATH and the gradient flow of "
                             "each network beside it (needs matplotlib)")
    args, code = parse(parser, argv)
    if args is None:
        return code
    if args.seed < 0:
        return fail(parser, f"--seed must be >= 0, got {args.seed}")
    if args.samples < 8:
        return fail(parser, f"--samples must be at least 8, got {args.samples}")

    import tinycore as tc
    from tinycore import diagnostics

    X, y = tc.datasets.make_moons(args.samples, noise=0.15, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(len(X))
    n_train = (3 * len(X)) // 4
    train, test = order[:n_train], order[n_train:]
    X_train, y_train = X[train], y[train].astype(np.float64)
    X_test, y_test = X[test], y[test].astype(np.float64)

    nets = {name: build(name, args.width, args.seed) for name in ("sigmoid", "relu")}
    for model in nets.values():
        model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=args.lr))
    how = ("Dense(init='he_uniform')" if _has_init()
           else "Glorot weights rescaled by hand with layer.W[...] *= sqrt((in + out) / in)")
    print(f"Two {DEPTH}-layer networks on two moons ({n_train} training points): "
          f"2 -> {DEPTH - 1} x {args.width} hidden -> 1 sigmoid output, "
          "binary cross-entropy")
    print("  sigmoid: hidden sigmoid units, Glorot-uniform weights")
    print(f"  relu:    hidden ReLU units, He-uniform weights ({how})")

    # -- before training: one backward pass over the training set -------------
    before = {name: gradient_norms_on(model, X_train, y_train) for name, model in nets.items()}
    print()
    print("||dW|| of each layer before training (one backward pass, no update):")
    print(f"{'layer':>5}  {'sigmoid':>10}  {'/ last':>9}  {'relu':>10}  {'/ last':>9}")
    for k in range(DEPTH):
        s, r = before["sigmoid"][k], before["relu"][k]
        print(f"{k:>5}  {s:>10.3e}  {s / before['sigmoid'][-1]:>9.2e}  "
              f"{r:>10.3e}  {r / before['relu'][-1]:>9.2e}")
    # The gradient of layer 0 passes through the derivatives of the nine
    # hidden layers (the output's sigmoid is folded into the BCE gradient).
    r_layers = DEPTH - 1
    bound = 0.25 ** r_layers
    print()
    print(f"first/last ratio ||dW_0|| / ||dW_{DEPTH - 1}||, through r = {r_layers} "
          "hidden activations:")
    for name in nets:
        ratio = before[name][0] / before[name][-1]
        per_layer = ratio ** (1 / r_layers) if ratio > 0 else 0.0
        print(f"  {name:<8} {ratio:.3e}  (about {per_layer:.3f} per layer)")
    print(f"  the seed's bound for sigmoid chains with |w| about 1: 0.25^{r_layers} = "
          f"{bound:.3e} (0.25 per layer)")

    print()
    print("tinycore.diagnostics.vanishing_gradient_report on the sigmoid network:")
    diagnostics.vanishing_gradient_report(nets["sigmoid"], X_train, y_train)

    # -- training ---------------------------------------------------------------
    records = {name: _train(model, X_train, y_train, args.epochs, args.batch_size)
               for name, model in nets.items()}
    print()
    print(f"training, SGD lr {args.lr:g}, batch {args.batch_size}:")
    print(f"{'epoch':>5}  {'sigmoid loss':>12}  {'acc':>5}  {'relu loss':>12}  {'acc':>5}")
    for epoch in range(args.epochs):
        s, r = records["sigmoid"], records["relu"]
        print(f"{epoch + 1:>5}  {s['loss'][epoch]:>12.4f}  {s['accuracy'][epoch]:>5.3f}  "
              f"{r['loss'][epoch]:>12.4f}  {r['accuracy'][epoch]:>5.3f}")
    print()
    for name, model in nets.items():
        result = model.evaluate(X_test, y_test)
        norms = records[name]["grad_norms"][-1]
        print(f"{name:<8} test accuracy {result['accuracy']:.3f}, first/last gradient ratio "
              f"after training {norms[0] / norms[-1] if norms[-1] > 0 else float('nan'):.3e}")

    if args.plot:
        from tinycore import plot
        stem, ext = os.path.splitext(args.plot)
        try:
            plot.history(records, path=args.plot, title="10-layer networks on two moons")
            saved = [args.plot]
            for name, record in records.items():
                target = f"{stem}_grads_{name}{ext or '.png'}"
                plot.gradient_flow(record["grad_norms"], path=target,
                                   title=f"gradient norm per layer, {name} network")
                saved.append(target)
        except (ImportError, OSError) as exc:
            return fail(parser, f"cannot save the plot: {exc}")
        print(f"plots saved to {', '.join(saved)}")
    return 0
