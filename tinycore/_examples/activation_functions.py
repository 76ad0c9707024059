"""The seven activation functions, each trained on the same problem.

One network shape (2 inputs, two hidden layers, a softmax output trained with
cross-entropy), one data set (two moons, which no straight line separates),
one seed and one learning rate; only the activation of the hidden layers
changes.  What to look for:

- relu, leaky_relu, tanh: learn the curved boundary;
- sigmoid: learns, more slowly (sigmoid' <= 0.25 shrinks the gradient);
- linear: a stack of linear layers is one linear map, so the boundary is a
  straight line and the accuracy stalls well short of 100%;
- softmax: as a hidden activation it squeezes each layer's units into a
  distribution that sums to 1; it works, but poorly (it is meant for outputs);
- step: its derivative is 0 everywhere, so backpropagation sends nothing
  back through the hidden layers.  Their weights never move (||dW|| = 0) and
  only the output layer learns, on whatever fixed binary features the random
  initial weights happen to compute.
"""
from __future__ import annotations

import numpy as np

from tinycore._examples import ArgumentParser, fail, parse, positive_float, positive_int

__all__ = ["main", "train_one"]


def train_one(activation: str, data, hidden: int, epochs: int, lr: float,
              batch_size: int, seed: int) -> dict:
    """Train the network with ``activation`` in its hidden layers; return its numbers."""
    import tinycore as tc
    from tinycore import diagnostics

    X_train, y_train, X_test, y_test = data
    model = tc.Sequential([tc.Dense(2, hidden, activation),
                           tc.Dense(hidden, hidden, activation),
                           tc.Dense(hidden, 2, "softmax")], dtype="float32", seed=seed)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=lr))
    start = model.param_buffer.copy()
    history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    train = model.evaluate(X_train, y_train)
    test = model.evaluate(X_test, y_test)
    norms = diagnostics.vanishing_gradient_report(model, X_train, y_train, file=False).norms
    first = model.layers[0]
    moved = float(np.abs(first.W - start[:first.W.size].reshape(first.W.shape)).max())
    return {"activation": activation, "loss": train["loss"], "train_accuracy": train["accuracy"],
            "test_accuracy": test["accuracy"], "first_grad_norm": norms[0],
            "first_weight_change": moved, "history": history}


def main(argv=None) -> int:
    """Train one network per activation and print a table of the results."""
    import tinycore as tc

    parser = ArgumentParser(
        prog="tinycore demo activation_functions",
        description="The same network trained with each of the seven activations on "
                    "two moons: final loss and accuracy, and why step cannot learn.",
    )
    parser.add_argument("--epochs", type=positive_int, default=60, help="(60)")
    parser.add_argument("--samples", type=positive_int, default=400,
                        help="points of the two-moons data, 3/4 for training (400)")
    parser.add_argument("--hidden", type=positive_int, default=16,
                        help="units per hidden layer (16)")
    parser.add_argument("--lr", type=positive_float, default=0.5, help="SGD learning rate (0.5)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="(32)")
    parser.add_argument("--seed", type=int, default=0, help="(0)")
    parser.add_argument("--activations", default=",".join(tc.activations.NAMES),
                        help="comma-separated names (all seven)")
    parser.add_argument("--plot", metavar="PATH",
                        help="save the loss curves to PATH (needs matplotlib)")
    args, code = parse(parser, argv)
    if args is None:
        return code
    if args.seed < 0:
        return fail(parser, f"--seed must be >= 0, got {args.seed}")
    if args.samples < 8:
        return fail(parser, f"--samples must be at least 8, got {args.samples}")
    names = [name.strip() for name in args.activations.split(",") if name.strip()]
    unknown = [name for name in names if name not in tc.activations.NAMES]
    if unknown or not names:
        return fail(parser, f"unknown activation {unknown[0] if unknown else ''!r}; expected "
                            f"one of {', '.join(tc.activations.NAMES)}")

    X, y = tc.datasets.make_moons(args.samples, noise=0.2, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(len(X))
    n_train = (3 * len(X)) // 4
    data = (X[order[:n_train]], y[order[:n_train]], X[order[n_train:]], y[order[n_train:]])
    print(f"Network 2 -> {args.hidden} -> {args.hidden} -> 2 softmax, cross-entropy, "
          f"SGD lr {args.lr:g}, {args.epochs} epochs, on two moons "
          f"({n_train} training, {len(X) - n_train} test points)")
    print("the hidden layers use each activation in turn:")
    print()
    results = [train_one(name, data, args.hidden, args.epochs, args.lr, args.batch_size,
                         args.seed) for name in names]
    print(f"{'activation':<11}  {'loss':>7}  {'train acc':>9}  {'test acc':>8}  "
          f"{'||dW|| layer 0':>14}  {'W0 moved (max)':>15}")
    for row in results:
        print(f"{row['activation']:<11}  {row['loss']:>7.4f}  {row['train_accuracy']:>9.3f}  "
              f"{row['test_accuracy']:>8.3f}  {row['first_grad_norm']:>14.3e}  "
              f"{row['first_weight_change']:>15.3e}")
    print()
    print("linear: layers of linear units compose to one linear map, so the boundary")
    print("  is a straight line: two moons cannot be separated that way.")
    if "step" in names:
        step = next(row for row in results if row["activation"] == "step")
        print("step: its derivative is 0 everywhere (and undefined at 0), so")
        print("  dZ = dA * step'(Z) = 0 in every hidden layer: ||dW|| = "
              f"{step['first_grad_norm']:g} and the first layer's weights moved by "
              f"{step['first_weight_change']:g}.")
        print("  Only the output layer learns, on the fixed binary features the random")
        print("  initial weights compute; gradient descent cannot train a step network.")
    if args.plot:
        from tinycore import plot
        try:
            plot.history({row["activation"]: row["history"] for row in results},
                         path=args.plot, title="hidden activation on two moons")
        except (ImportError, OSError) as exc:
            return fail(parser, f"cannot save the plot: {exc}")
        print(f"loss curves saved to {args.plot}")
    return 0
