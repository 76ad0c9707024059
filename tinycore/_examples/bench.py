"""``tinycore bench``: a quick speed check of one training step against plain NumPy.

The NumPy step is written the way a careful NumPy user would (float32, buffers
allocated once, softmax and cross-entropy fused, in-place SGD), so the ratio
compares tinycore with good NumPy, not a straw man.  Both start from the same
weights.  For careful measurements use the pytest-benchmark files in the
checkout's ``benchmarks/``; this is the two-second version.
"""
from __future__ import annotations

import time

import numpy as np

from tinycore._examples import ArgumentParser, fail, parse, positive_int

__all__ = ["main", "NumpyStep", "SIZES", "time_steps"]

#: name -> (batch, layer sizes): ReLU hidden layers, softmax output.
SIZES = {
    "small": (32, (2, 64, 64, 3)),
    "medium": (128, (256, 512, 512, 10)),
    "large": (256, (784, 1024, 1024, 10)),
}


class NumpyStep:
    """One SGD step of a ReLU MLP with a softmax output, in float32 NumPy."""

    def __init__(self, weights, batch: int, lr: float):
        self.W = [np.array(W, dtype=np.float32) for W, _ in weights]
        self.b = [np.array(b, dtype=np.float32) for _, b in weights]
        self.lr = lr
        self.A = [np.empty((batch, W.shape[1]), np.float32) for W in self.W]
        self.dZ = [np.empty_like(A) for A in self.A]
        self.dW = [np.empty_like(W) for W in self.W]
        self.dX = [np.empty((batch, W.shape[0]), np.float32) for W in self.W]

    def __call__(self, X, labels) -> float:
        n_layers = len(self.W)
        inp = X
        for k in range(n_layers):
            A = self.A[k]
            np.matmul(inp, self.W[k], out=A)
            A += self.b[k]
            if k < n_layers - 1:
                np.maximum(A, 0, out=A)
            inp = A
        P = self.A[-1]                       # softmax in place
        P -= P.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=1, keepdims=True)
        rows = np.arange(P.shape[0])
        loss = -np.log(np.maximum(P[rows, labels], 1e-12)).mean()
        dZ = self.dZ[-1]
        np.copyto(dZ, P)                     # fused softmax + cross-entropy: (P - Y) / B
        dZ[rows, labels] -= 1
        dZ /= P.shape[0]
        for k in range(n_layers - 1, -1, -1):
            below = X if k == 0 else self.A[k - 1]
            np.matmul(below.T, dZ, out=self.dW[k])
            db = dZ.sum(axis=0)
            if k > 0:
                dX = self.dX[k]
                np.matmul(dZ, self.W[k].T, out=dX)
                dX *= below > 0              # relu'
            self.W[k] -= self.lr * self.dW[k]
            self.b[k] -= self.lr * db
            if k > 0:
                dZ = dX
        return float(loss)


def time_steps(steps_by_name: dict, X, y, steps: int, repeats: int = 3) -> dict:
    """Best time per step, in seconds, of each ``step(X, y)`` in ``steps_by_name``.

    The candidates take turns within each of the ``repeats`` runs, so that a
    change in the machine's load hits them alike.
    """
    best = {name: float("inf") for name in steps_by_name}
    for step in steps_by_name.values():
        step(X, y)                           # warm up: allocations, BLAS threads
    for _ in range(repeats):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(X, y)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def main(argv=None) -> int:
    """Print a table of step times and their ratio."""
    import tinycore as tc

    parser = ArgumentParser(
        prog="tinycore bench",
        description="Time one training step (forward, backward, SGD update) of a ReLU "
                    "network in tinycore and in plain NumPy, float32.",
    )
    parser.add_argument("--sizes", default="small,medium",
                        help=f"comma-separated, from {', '.join(SIZES)} (small,medium)")
    parser.add_argument("--steps", type=positive_int, default=100,
                        help="steps per timing run; the best of 3 runs is shown (100)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads (default: leave as is)")
    args, code = parse(parser, argv)
    if args is None:
        return code
    names = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = [name for name in names if name not in SIZES]
    if unknown or not names:
        return fail(parser, f"unknown size {unknown[0] if unknown else ''!r}; expected "
                            f"some of {', '.join(SIZES)}")
    if args.threads is not None:
        tc.set_num_threads(args.threads)

    print(f"one training step (forward + backward + SGD), float32, best of 3 x {args.steps}")
    print(f"{'size':<7}  {'batch':>5}  {'layers':<20}  {'tinycore':>11}  {'numpy':>11}  "
          f"{'numpy/tinycore':>14}")
    for name in names:
        batch, sizes = SIZES[name]
        rng = np.random.default_rng(0)
        X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        layers = [tc.Dense(sizes[i], sizes[i + 1], "relu") for i in range(len(sizes) - 2)]
        layers.append(tc.Dense(sizes[-2], sizes[-1], "softmax"))
        model = tc.Sequential(layers, dtype="float32", seed=0)
        # A tiny learning rate keeps both runs stable over many steps.
        model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=1e-4))
        reference = NumpyStep([(layer.W, layer.b) for layer in model.layers], batch, 1e-4)
        times = time_steps({"tinycore": model.train_step, "numpy": reference}, X, y,
                           args.steps)
        ours, theirs = times["tinycore"], times["numpy"]
        shape = "-".join(str(size) for size in sizes)
        print(f"{name:<7}  {batch:>5}  {shape:<20}  {ours * 1e6:>8.1f} us  "
              f"{theirs * 1e6:>8.1f} us  {theirs / ours:>13.2f}x")
    print("numpy/tinycore > 1 means tinycore is faster.")
    return 0
