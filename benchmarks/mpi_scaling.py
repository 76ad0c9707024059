"""Data-parallel scaling of the MNIST-sized network (784-256-128-10) on this machine.

A script, not a pytest-benchmark file (the rest of benchmarks/ is): it must be
started by the MPI launcher, once per rank count, and is not collected by
``pytest benchmarks/`` (its name does not start with ``test_``)::

    mpiexec -n 1 python benchmarks/mpi_scaling.py
    mpiexec -n 2 python benchmarks/mpi_scaling.py

Each rank trains on synthetic MNIST-shaped data (float32, 10 classes) with
its own batch of ``--batch`` rows (weak scaling: the global batch grows with
the ranks) and ``--threads`` BLAS threads per rank (default 1, so that two
ranks do not fight over this machine's two cores).  Rank 0 prints:

- throughput, samples per second of all ranks together;
- per step: the compute time (forward, backward, update) and the time in the
  gradient ``Allreduce`` (which includes waiting for the slower rank);
- the bare ``Allreduce`` of the gradient buffer (940 KB), timed alone after a
  barrier: the transfer cost without the wait.

``docs/distributed.md`` holds the figures of the last run and the cluster
projection made from them.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from mpi4py import MPI

import tinycore as tc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000, help="training rows (all ranks)")
    parser.add_argument("--batch", type=int, default=128, help="rows per rank and step")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--repeats", type=int, default=200, help="bare Allreduce repeats")
    parser.add_argument("--latency-us", type=float, default=5.0,
                        help="per-message network latency assumed by the projection")
    parser.add_argument("--json", action="store_true", help="print one JSON line too")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    tc.set_num_threads(args.threads)
    rng = np.random.default_rng(0)             # the same data on every rank
    X = rng.random((args.rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.rows)
    model = tc.Sequential([tc.Dense(784, 256, activation="relu"),
                           tc.Dense(256, 128, activation="relu"),
                           tc.Dense(128, 10, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.05))

    # Warm-up epoch (page faults, BLAS start-up), then the timed run.
    model.fit(X[:4096], y[:4096], epochs=1, batch_size=args.batch, verbose=0, comm=comm)
    comm.Barrier()
    history = model.fit(X, y, epochs=args.epochs, batch_size=args.batch, verbose=0, comm=comm)
    stats = history.comm_stats
    compute = (stats.train_seconds - stats.allreduce_seconds) / stats.steps
    in_allreduce = stats.allreduce_seconds / stats.steps

    # The bare collective on the same buffer, each call after a barrier.
    grads = model.grad_buffer
    bare = []
    for _ in range(args.repeats):
        comm.Barrier()
        started = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
        bare.append(time.perf_counter() - started)
    bare_median = float(np.median(bare))
    worst = comm.allreduce(in_allreduce, op=MPI.MAX)

    if rank == 0:
        print(f"ranks {size}, batch {args.batch} per rank (global {size * args.batch}), "
              f"{args.threads} BLAS thread(s) per rank, {model.n_params} parameters "
              f"({grads.nbytes / 1e6:.3f} MB of float32 gradients)")
        print(f"throughput           {stats.samples_per_second:12,.0f} samples/s")
        print(f"compute per step     {compute * 1e3:12.3f} ms")
        print(f"Allreduce per step   {in_allreduce * 1e3:12.3f} ms  (rank 0; max over ranks "
              f"{worst * 1e3:.3f} ms; {100 * stats.allreduce_seconds / stats.train_seconds:.1f}% "
              "of the run)")
        print(f"bare Allreduce       {bare_median * 1e3:12.3f} ms  (median of {args.repeats}, "
              f"after a barrier: {grads.nbytes / bare_median / 1e9:.2f} GB/s effective)")
        project(compute, grads.nbytes, args.batch, args.latency_us * 1e-6)
        if args.json:
            print(json.dumps({"ranks": size, "batch": args.batch, "threads": args.threads,
                              "samples_per_second": stats.samples_per_second,
                              "compute_s": compute, "allreduce_s": in_allreduce,
                              "bare_allreduce_s": bare_median, "bytes": grads.nbytes}))


def ring_allreduce_seconds(ranks: int, nbytes: int, bits_per_second: float,
                           latency: float = 0.0) -> float:
    """Ring allreduce: a reduce-scatter and an allgather, each N-1 steps that
    move nbytes/N per rank, so 2(N-1)/N * nbytes / bandwidth, plus one
    latency per step (2(N-1) latencies)."""
    return (2 * (ranks - 1) / ranks * nbytes / (bits_per_second / 8)
            + 2 * (ranks - 1) * latency)


def project(compute: float, nbytes: int, batch: int, latency: float) -> None:
    """Weak scaling on a cluster from this machine's compute time per step:
    step time = compute + allreduce (no overlap: the Allreduce starts after
    the whole backward pass); speed-up = N * compute / step time."""
    print(f"\nprojection: {compute * 1e3:.3f} ms compute per step of {batch} rows, "
          f"{nbytes / 1e6:.3f} MB reduced per step, ring allreduce")
    print(f"{'ranks':>6} {'Gbit/s':>7} {'allreduce ms':>13} {'+latency ms':>12} "
          f"{'efficiency':>11} {'speed-up':>9} {'samples/s':>12}")
    for gbits in (10, 100):
        for ranks in (8, 64, 512):
            bandwidth = ring_allreduce_seconds(ranks, nbytes, gbits * 1e9)
            total = ring_allreduce_seconds(ranks, nbytes, gbits * 1e9, latency)
            step = compute + total
            print(f"{ranks:>6} {gbits:>7} {bandwidth * 1e3:>13.3f} {total * 1e3:>12.3f} "
                  f"{compute / step:>11.2f} {ranks * compute / step:>9.1f} "
                  f"{ranks * batch / step:>12,.0f}")


if __name__ == "__main__":
    main()
