"""``python -m tinycore``: train a small network on generated spirals.

The README's first command runs this: it needs no download and shows, in a
few seconds, the loss falling and the accuracy rising as gradient descent
trains a ReLU network with a softmax output.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tinycore",
        description="Train a dense network on built-in spiral data and report "
                    "its loss and accuracy.",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate of SGD")
    parser.add_argument("--hidden", type=int, default=64, help="units per hidden layer")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Entry point of ``python -m tinycore`` and of the ``tinycore`` script."""
    import tinycore as tc

    args = _parse(argv)
    try:
        X, y = tc.datasets.make_spirals(900, n_classes=3, noise=0.15, seed=args.seed)
        shuffled = np.random.default_rng(args.seed).permutation(len(X))
        train, test = shuffled[:600], shuffled[600:]
        model = tc.Sequential([
            tc.Dense(2, args.hidden, activation="relu"),
            tc.Dense(args.hidden, args.hidden, activation="relu"),
            tc.Dense(args.hidden, 3, activation="softmax"),
        ], seed=args.seed)
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=args.lr))
        print(model)
        model.fit(X[train], y[train], epochs=args.epochs, batch_size=args.batch_size,
                  verbose=2)
        result = model.evaluate(X[test], y[test])
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"test loss {result['loss']:.4f} - test accuracy {result['accuracy']:.3f} "
          f"({len(test)} held-out points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
