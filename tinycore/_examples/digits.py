"""A real data set: the 8x8 handwritten digits that scikit-learn ships.

1797 images of 8 x 8 pixels (grey levels 0-16), ten classes.  A network with
one hidden ReLU layer and a softmax output, trained by SGD on 80% of the
images, is scored on the other 20%, which it never saw.  Then the same
training steps (same initial weights, same batches) are timed in tinycore and
in a plain NumPy implementation written with care (float32, buffers allocated
once, fused softmax + cross-entropy gradient, in-place updates).

scikit-learn is only needed for the data: ``pip install "tinycore[examples]"``.
"""
from __future__ import annotations

import numpy as np

from tinycore._examples import ArgumentParser, fail, parse, positive_float, positive_int
from tinycore._examples.bench import NumpyStep, time_steps

__all__ = ["main", "load_digits"]


def load_digits(seed: int = 0, test_fraction: float = 0.2):
    """(X_train, y_train, X_test, y_test): pixels scaled to [0, 1], a
    stratified split (the same share of each digit on both sides)."""
    from sklearn.datasets import load_digits as sklearn_digits

    X, y = sklearn_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for digit in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == digit))
        test[rows[:int(round(test_fraction * len(rows)))]] = True
    return X[~test], y[~test].astype(np.int64), X[test], y[test].astype(np.int64)


def main(argv=None) -> int:
    """Train on the digits, print test accuracy and the speed against NumPy."""
    import tinycore as tc

    parser = ArgumentParser(
        prog="tinycore demo digits",
        description="Train a 64-128-10 ReLU/softmax network on scikit-learn's 8x8 "
                    "digits and compare its training speed with plain NumPy.",
    )
    parser.add_argument("--epochs", type=positive_int, default=40)
    parser.add_argument("--hidden", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=0.1)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-steps", type=positive_int, default=200,
                        help="steps per timing run; the best of 3 runs is shown (200)")
    args, code = parse(parser, argv)
    if args is None:
        return code
    try:
        X_train, y_train, X_test, y_test = load_digits(args.seed)
    except ImportError:
        return fail(parser, 'this example needs scikit-learn for its data: '
                            'pip install "tinycore[examples]"')

    def network():
        model = tc.Sequential([tc.Dense(64, args.hidden, activation="relu"),
                               tc.Dense(args.hidden, 10, activation="softmax")],
                              dtype="float32", seed=args.seed)
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=args.lr))
        return model

    model = network()
    print(f"{len(X_train)} training and {len(X_test)} test images of 8x8 pixels, 10 classes")
    print(model)
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        verbose=0)
    test = model.evaluate(X_test, y_test)
    print(f"after {args.epochs} epochs: training loss {history.history['loss'][-1]:.4f}, "
          f"training accuracy {history.history['accuracy'][-1]:.4f}")
    print(f"test accuracy {test['accuracy']:.4f} (test loss {test['loss']:.4f})")

    # The speed of the same steps: same weights, same batch, both float32.
    fresh = network()
    reference = NumpyStep([(layer.W, layer.b) for layer in fresh.layers],
                          args.batch_size, args.lr)
    X_batch, y_batch = X_train[:args.batch_size], y_train[:args.batch_size]
    times = time_steps({"tinycore": fresh.train_step, "numpy": reference},
                       X_batch, y_batch, args.timing_steps)
    ours, theirs = times["tinycore"], times["numpy"]
    print(f"one training step of batch {args.batch_size}: tinycore {ours * 1e6:.1f} us, "
          f"NumPy {theirs * 1e6:.1f} us ({theirs / ours:.1f}x)")
    return 0
