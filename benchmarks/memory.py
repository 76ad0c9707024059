"""Memory of training: what a steady-state step allocates, and fit's peak.

Two measurements, printed as a table (Markdown) and checked against the
budgets of the speed issue:

1. **Steady state.** After a warm-up, tracemalloc snapshots are taken before
   and after ``--steps`` calls of ``Sequential.train_step`` (T2 and T5 of the
   benchmark suite); every allocation site whose block count or size grew is
   a failure, wherever it is (tinycore, NumPy or the interpreter).
2. **fit's peak.** The resident set's high-water mark (``VmHWM``, reset
   through ``/proc/self/clear_refs``) while the data and the model are made
   and one ``fit`` runs, above the resident set before (the interpreter,
   NumPy, SciPy and tinycore loaded, as in any script).  The budget is the
   issue's: the data, the parameters, the gradients, the optimizer's state,
   one batch of activations (the plan's workspaces) and 30 MB.  (Measured
   from before the model exists because the gradient buffer, zeroed by
   calloc, only becomes resident when the first step writes it.)

Linux only (``/proc``).  Standard library, NumPy and tinycore::

    python benchmarks/memory.py            # about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import sys
import tracemalloc

import numpy as np

import tinycore as tc

MB = 1 << 20
SLACK = 30 * MB


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # "5" resets the peak resident set size to the current one (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def _model(sizes, hidden, output, seed=0) -> tc.Sequential:
    layers = [tc.Dense(n_in, n_out, activation=hidden if index < len(sizes) - 2 else output)
              for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
    return tc.Sequential(layers, dtype="float32", seed=seed)


def steady_state(name, sizes, hidden, batch, steps) -> dict:
    """Allocation sites that grew over ``steps`` train_step calls."""
    rng = np.random.default_rng(0)
    model = _model(sizes, hidden, "softmax")
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.01))
    X = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)
    for _ in itertools.repeat(None, 100):
        model.train_step(X, y)
    gc.collect()
    tracemalloc.start()
    try:
        # Both snapshots inside the traced run, after the optimizer's step
        # counter has passed 256 (the cached small ints): it is then one int
        # object in each, replaced every step, not a growing one.  The loops
        # count with repeat(), which makes no int objects of its own; both
        # iterators are made before the first snapshot, so both hold them.
        warm_up, measured = itertools.repeat(None, 300), itertools.repeat(None, steps)
        for _ in warm_up:
            model.train_step(X, y)
        before = tracemalloc.take_snapshot()
        for _ in measured:
            model.train_step(X, y)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = [stat for stat in after.compare_to(before, "lineno")
             if stat.count_diff > 0 or stat.size_diff > 0]
    # take_snapshot's own bookkeeping lives in tracemalloc.py: not the step's.
    grown = [stat for stat in grown
             if not stat.traceback[0].filename.endswith("tracemalloc.py")]
    return {"name": name, "steps": steps, "grown": grown}


def fit_peak(name, sizes, hidden, n_samples, batch, optimizer, epochs=1) -> dict:
    """Peak resident memory of making the data and the model and one fit."""
    gc.collect()
    before = _status_kib("VmRSS") * 1024
    _reset_peak()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n_samples)
    model = _model(sizes, hidden, "softmax")
    model.compile(loss="cross_entropy", optimizer=optimizer)
    model.fit(X, y, epochs=epochs, batch_size=batch, verbose=0)
    peak = _status_kib("VmHWM") * 1024 - before
    parts = {"data": X.nbytes + y.nbytes,
             "params": model.param_buffer.nbytes, "grads": model.grad_buffer.nbytes,
             "state": sum(array.nbytes for array in optimizer._state.values()
                          if isinstance(array, np.ndarray)),
             "workspaces": model._plan.workspace_bytes()}
    return {"name": name, **parts, "peak": peak, "budget": sum(parts.values()) + SLACK}


#: fit cases: layer sizes, samples, batch size, optimizer factory.
FIT_CASES = {
    "T4 sizes, 16,384 samples, batch 256, SGD":
        ((1024, 2048, 2048, 10), 16_384, 256, lambda: tc.SGD(lr=0.01)),
    "T4 sizes, 16,384 samples, batch 256, Adam":
        ((1024, 2048, 2048, 10), 16_384, 256, lambda: tc.Adam(lr=1e-3)),
    "T3 sizes, 60,000 samples, batch 128, SGD":
        ((784, 256, 128, 10), 60_000, 128, lambda: tc.SGD(lr=0.01)),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000,
                        help="steady-state steps per configuration (default 10,000)")
    parser.add_argument("--fit-case", choices=sorted(FIT_CASES),
                        help="measure this fit alone and print its figures as JSON")
    args = parser.parse_args(argv)
    if args.fit_case:
        sizes, n_samples, batch, optimizer = FIT_CASES[args.fit_case]
        print(json.dumps(fit_peak(args.fit_case, sizes, "relu", n_samples, batch,
                                  optimizer())))
        return 0

    failed = False
    print("| steady state | steps | allocation sites that grew |")
    print("| :--- | ---: | :--- |")
    for config in [("T2 64-32-10 relu, batch 32", (64, 32, 10), "relu", 32),
                   ("T5 32-10x32-10 sigmoid, batch 64", (32,) + (32,) * 10 + (10,),
                    "sigmoid", 64)]:
        result = steady_state(*config, steps=args.steps)
        sites = "; ".join(f"{stat.traceback[0]} +{stat.count_diff} blocks"
                          for stat in result["grown"][:3]) or "none"
        failed |= bool(result["grown"])
        print(f"| {result['name']} | {result['steps']:,} | {sites} |")

    print()
    print("| fit, one epoch | data MB | params MB | grads MB | optimizer state MB "
          "| activations MB | peak MB | budget MB |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in FIT_CASES:
        # Each in a fresh process: memory that an earlier case freed but the
        # allocator kept would otherwise be reused unseen.
        output = subprocess.run([sys.executable, __file__, "--fit-case", name],
                                check=True, capture_output=True, text=True).stdout
        result = json.loads(output)
        failed |= result["peak"] > result["budget"]
        print(f"| {name} | " + " | ".join(
            f"{result[key] / MB:,.1f}" for key in
            ("data", "params", "grads", "state", "workspaces", "peak", "budget")) + " |")
    print()
    print("within budget" if not failed else "OVER BUDGET (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
