"""Data-parallel training on several processes (and machines) with MPI.

Every rank (process) holds the same model.  Each step, every rank runs the
forward and backward pass on its own part of the step's global batch, the
gradients of all ranks are summed in place with **one** ``Allreduce`` on the
model's flat ``grad_buffer`` (no packing: all gradients already live in one
contiguous array), and every rank applies the same optimizer update to the
same summed gradient, so the weights stay bit-identical on every rank.

Use it through :meth:`Sequential.fit`::

    from mpi4py import MPI
    history = model.fit(X, y, epochs=10, batch_size=64, comm=MPI.COMM_WORLD)

and start the script with ``mpiexec -n 4 python train.py``.  ``batch_size``
is then the batch of each rank: a step trains on ``size * batch_size``
samples, and training matches single-process training with that batch size
on the same sample order, to floating-point round-off (see
``docs/distributed.md``).

mpi4py is optional (``pip install "tinycore[mpi]"``): this module imports it
only when a communicator is used, and ``import tinycore`` never does.

How a step is split
-------------------
*Replicated data* (the default, ``sharded=False``): every rank passes the
same ``X, y`` (typically the same memory-mapped ``.npy`` file, see
:func:`tinycore.data.load_npy`, so that each rank reads only the rows it
touches).  The epoch's permutation is drawn from the model's generator,
whose state is broadcast from rank 0 at the start, so it is the same on
every rank.  Global batch ``k`` is rows ``[k*N*b, (k+1)*N*b)`` of the
permutation; rank ``r`` takes rows ``[r*b, (r+1)*b)`` of it.  In the last,
partial global batch some ranks get fewer rows, or none.

*Sharded data* (``sharded=True``): each rank passes only its own rows (e.g.
``tinycore.data.load_npy(path, comm=comm)``).  Each rank visits its shard in
its own random order (local shuffling: shuffle the file once beforehand if
its rows are sorted); step ``k`` trains on rows ``[k*b, (k+1)*b)`` of every
rank's order, and an epoch has as many steps as the largest shard needs.

Weighting: each rank's plan computes the mean gradient over its own ``n_r``
rows.  Before the SUM ``Allreduce`` it is multiplied by ``n_r / n`` (``n``
the rows of the global batch, for the losses that average; the ``sse``
loss is a sum and adds up unweighted), so the sum is exactly the gradient
of the global batch.  A rank without rows contributes zeros.

What agrees across ranks
------------------------
- Divergence: a rank whose loss or gradient is not finite fills its gradient
  with NaN before the ``Allreduce``; the sum is then NaN on every rank, and
  every rank raises the same :class:`TrainingDivergedError` after the same
  step, with no extra message (and no update: the weights stay those of the
  last good step).
- Metrics: the epoch's "loss", "accuracy" and the validation metrics are
  sums reduced over all ranks (one small ``Allreduce`` per epoch), so every
  rank's callbacks see the same numbers and take the same decisions
  (``EarlyStopping``, ``ReduceLROnPlateau``).  Callbacks with an
  ``on_batch_end`` get the global batch's loss, at the cost of a second,
  tiny ``Allreduce`` per step that also carries ``stop_training``.
- Rank 0 alone shows progress, runs :class:`~tinycore.callbacks.ModelCheckpoint`
  (the only built-in callback that writes files) and returns the full
  :class:`History`; the other ranks return an empty one.
- A rank that raises anything else calls ``MPI_Abort`` after printing which
  rank failed and why, so that the others do not wait forever in the next
  collective; ``mpiexec`` then ends every rank.  Checkpoints are written
  atomically (temporary file, then rename), so the last one stays intact.

The GIL: mpi4py's ``Allreduce`` runs with the GIL released.  Its MPI
declarations are ``nogil``, which only allows it; it was measured (a test in
``tests/mpi``, figures in ``docs/distributed.md``): another Python thread of
the same process keeps running while a rank waits in ``Allreduce``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from tinycore import _simd
from tinycore._validation import check_positive_int
from tinycore.callbacks import ModelCheckpoint
from tinycore.training import (History, TrainingDivergedError, _check_callbacks,
                               _epoch_loop, _n_predictions, _overrides, _Progress,
                               _split_validation)

_optim = _simd.load("_optim")

__all__ = ["fit", "CommStats", "rank_of", "size_of"]


# -- communicators -------------------------------------------------------------------


class _Communicator:
    """The few collectives the training loop needs, over some transport.

    ``rank`` and ``size`` as in MPI.  Array methods work in place on
    contiguous NumPy arrays; object methods pickle small Python values.
    """

    rank = 0
    size = 1

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """buffer <- the elementwise sum of every rank's buffer."""
        raise NotImplementedError

    def bcast_array(self, buffer: np.ndarray, root: int = 0) -> None:
        raise NotImplementedError

    def bcast_object(self, value, root: int = 0):
        raise NotImplementedError

    def allgather_object(self, value) -> list:
        raise NotImplementedError

    def abort(self, code: int) -> None:
        """End every rank (only called when size > 1)."""
        raise NotImplementedError


class _SingleProcess(_Communicator):
    """One rank, no communication: what ``size == 1`` means, without MPI.

    Used by the single-process tests to run the distributed loop in the
    ordinary test suite (mpi4py not installed).
    """

    def allreduce_sum(self, buffer):
        pass

    def bcast_array(self, buffer, root=0):
        pass

    def bcast_object(self, value, root=0):
        return value

    def allgather_object(self, value):
        return [value]

    def abort(self, code):      # pragma: no cover - never called with size 1
        raise SystemExit(code)


class _MPI(_Communicator):
    """An mpi4py intracommunicator."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def allreduce_sum(self, buffer):
        # Uppercase call: the buffer is handed to MPI_Allreduce as it is (no
        # pickling), in place, with the GIL released by mpi4py.
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def bcast_array(self, buffer, root=0):
        self.comm.Bcast(buffer, root=root)

    def bcast_object(self, value, root=0):
        return self.comm.bcast(value, root=root)

    def allgather_object(self, value):
        return self.comm.allgather(value)

    def abort(self, code):
        self.comm.Abort(code)


def _communicator(comm) -> _Communicator:
    """Wrap ``comm`` (an mpi4py intracommunicator, or one of ours)."""
    if isinstance(comm, _Communicator):
        return comm
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            'fit(comm=...) needs mpi4py and an MPI library: pip install "tinycore[mpi]"'
        ) from None
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError("comm must be an mpi4py intracommunicator such as "
                        f"MPI.COMM_WORLD, got {type(comm).__name__}")
    return _MPI(comm, MPI)


def rank_of(comm) -> int:
    """This process's rank in ``comm`` (0 for ``comm=None``)."""
    return 0 if comm is None else _communicator(comm).rank


def size_of(comm) -> int:
    """The number of ranks in ``comm`` (1 for ``comm=None``)."""
    return 1 if comm is None else _communicator(comm).size


@dataclass
class CommStats:
    """Where a distributed ``fit`` spent its time, on this rank.

    ``history.comm_stats`` after ``fit(..., comm=...)``.

    Attributes
    ----------
    ranks : int
    steps : int
        Optimizer steps taken.
    allreduce_seconds : float
        Wall time inside the gradient ``Allreduce`` calls, including the
        wait for slower ranks.
    allreduce_bytes : int
        Size of the gradient buffer reduced at each step.
    train_seconds : float
        Wall time of the training loop (all epochs, validation included).
    samples : int
        Training samples processed by all ranks together.
    """

    ranks: int
    steps: int = 0
    allreduce_seconds: float = 0.0
    allreduce_bytes: int = 0
    train_seconds: float = 0.0
    samples: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else math.nan


# -- agreement --------------------------------------------------------------------------


class _PeerError(RuntimeError):
    """Another rank failed where all ranks must agree."""


def _agree(comm: _Communicator, what: str, action):
    """Run ``action()`` on every rank; if it raises on any, raise on all.

    For the steps that may fail on one rank only (checking its own data)
    and come before a collective the others would otherwise wait in forever.
    """
    try:
        result, error = action(), None
    except Exception as exc:            # re-raised below, on this rank as itself
        result, error = None, exc
    messages = comm.allgather_object(
        None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    for rank, message in enumerate(messages):
        if message is not None:
            raise _PeerError(f"rank {rank} of {comm.size} failed while {what}: {message}")
    return result


def _fingerprint(model, run: dict, n_rows: int, n_val: int, sharded: bool) -> dict:
    """What must be equal on every rank for the ranks to take the same
    steps (else one would wait in a collective the others never call)."""
    layers = [(l.in_features, l.out_features, l.activation, l.alpha, l.use_bias)
              for l in model.layers]
    facts = {"dtype": model.dtype.name, "layers": layers, "loss": model.loss.name,
              "optimizer": repr(model.optimizer), "epochs": run["epochs"],
              "batch_size": run["batch_size"], "shuffle": bool(run["shuffle"]),
              "sharded": sharded, "has validation": n_val >= 0,
              "batch callbacks": run["batch_callbacks"]}
    if not sharded:
        facts["training rows"] = n_rows
        facts["validation rows"] = n_val
    return facts


def _check_same(comm: _Communicator, fingerprint: dict) -> None:
    prints = comm.allgather_object(fingerprint)
    for rank, other in enumerate(prints):
        for key, value in fingerprint.items():
            if other.get(key) != value:
                raise ValueError(
                    f"every rank must call fit with the same model and settings: {key} is "
                    f"{other.get(key)!r} on rank {rank} but {value!r} on rank {comm.rank}"
                )


# -- the plan of an epoch -------------------------------------------------------------


def _steps_replicated(order: np.ndarray, batch_size: int, rank: int, size: int):
    """(rows of this rank, rows of the global batch) for each step."""
    n, global_batch = order.shape[0], batch_size * size
    for start in range(0, n, global_batch):
        n_global = min(global_batch, n - start)
        lo = start + min(rank * batch_size, n_global)
        hi = start + min((rank + 1) * batch_size, n_global)
        yield order[lo:hi], n_global


def _steps_sharded(order: np.ndarray, batch_size: int, shard_sizes: list[int]):
    """Each rank's next ``batch_size`` rows of its own order, for as many
    steps as the largest shard needs."""
    for start in range(0, max(shard_sizes), batch_size):
        n_global = sum(min(batch_size, max(0, n - start)) for n in shard_sizes)
        yield order[start:start + batch_size], n_global


def _epoch_order(model, n_rows: int, n_draw: int, shuffle: bool) -> np.ndarray:
    """This rank's visiting order for an epoch.

    Every rank draws the same permutation of ``n_draw`` rows (the generator
    states are equal), so the generators stay in step; with sharded data
    (``n_draw`` = the largest shard) each rank keeps the entries that fall in
    its own shard, a uniformly random order of it.
    """
    if not shuffle:
        return np.arange(n_rows, dtype=np.int64)
    order = model._rng.permutation(n_draw)
    return order if n_draw == n_rows else order[order < n_rows]


# -- one step ---------------------------------------------------------------------------


_OK, _DIVERGED = 0, 1


def _local_gradient(model, X, y, rows) -> tuple[int, float, int]:
    """Forward and backward on X[rows] without updating; return
    (status, loss, correct).  The gradient is left in ``grad_buffer``."""
    from tinycore.model import _DIVERGED as PLAN_DIVERGED, _count_correct
    classification = model.loss.is_classification
    plan = model._plan
    if plan is not None:
        status = plan.train_rows(X, y, rows, 0.0, False, classification, True)
        model._raise_if_busy(status)
        return (_DIVERGED if status == PLAN_DIVERGED else _OK), plan.last_loss, plan.last_correct
    X_rows, y_rows = X[rows], y[rows]         # custom loss: the per-layer path
    out = model._forward(X_rows)
    value = model._backward_loss(out, y_rows)
    try:
        model._check_finite_step(value)
    except TrainingDivergedError:
        return _DIVERGED, value, 0
    return _OK, value, (_count_correct(model.loss, out, y_rows) if classification else 0)


def _bad_layer(model) -> int:
    """The layer nearest the output whose summed gradient is not finite."""
    for index in range(len(model.layers) - 1, -1, -1):
        if not all(np.isfinite(g).all() for g in model.layers[index].gradients()):
            return index
    return len(model.layers) - 1


class _Stepper:
    """One data-parallel step: local gradient, weighted, summed, applied."""

    def __init__(self, model, comm: _Communicator, stats: CommStats):
        self.model, self.comm, self.stats = model, comm, stats
        self.grads = model.grad_buffer
        self.out = model.out_features
        stats.allreduce_bytes = self.grads.nbytes

    def __call__(self, X, y, rows, n_global: int, epoch: int, batch: int):
        model, grads, loss = self.model, self.grads, self.model.loss
        n_local = rows.shape[0]
        value, correct = 0.0, 0
        if n_local == 0:
            grads[...] = 0                       # the plan cannot run an empty batch
        else:
            status, value, correct = _local_gradient(model, X, y, rows)
            if status == _DIVERGED:
                grads[...] = np.nan              # poisons the sum on every rank
            else:
                # Mean over n_local rows -> this rank's share of the mean over
                # n_global rows (1 for sse, a sum: its gradients just add up).
                share = loss._denominator((n_local, self.out)) / loss._denominator((n_global, self.out))
                if share != 1.0:
                    np.multiply(grads, share, out=grads)
        started = time.perf_counter()
        self.comm.allreduce_sum(grads)
        self.stats.allreduce_seconds += time.perf_counter() - started
        # The summed buffer is the same on every rank, so is this verdict.
        if not math.isfinite(_optim.global_norm(grads)):
            raise TrainingDivergedError(_bad_layer(model), value, epoch, batch)
        model.optimizer.step(model)
        self.stats.steps += 1
        return value * loss._denominator((n_local, self.out)) if n_local else 0.0, correct


# -- the loop -----------------------------------------------------------------------------


def _evaluate(model, comm: _Communicator, validation, sharded: bool) -> dict:
    """Validation metrics over every rank's part of the validation data."""
    from tinycore.model import _count_correct
    X_val, y_val = validation
    if not sharded:                       # all ranks hold it: each takes a slice
        from tinycore.data import shard_bounds
        lo, hi = shard_bounds(X_val.shape[0], comm.rank, comm.size)
        X_val, y_val = X_val[lo:hi], y_val[lo:hi]
    sums = np.zeros(3)                    # loss sum, rows, correct
    if X_val.shape[0]:
        out = model.predict(X_val)
        sums[0] = model.loss._value_sum(out, y_val)
        sums[1] = X_val.shape[0]
        if model.loss.is_classification:
            sums[2] = _count_correct(model.loss, out, y_val)
    comm.allreduce_sum(sums)
    n = int(sums[1])
    scores = {"loss": sums[0] / model.loss._denominator((n, model.out_features))}
    if model.loss.is_classification:
        scores["accuracy"] = sums[2] / _n_predictions(model.loss, n, model.out_features)
    return scores


def _any_rank(comm: _Communicator, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (a stop request must be
    agreed, or the ranks that stop would leave the others in a collective)."""
    shared = np.array([float(bool(flag))])
    comm.allreduce_sum(shared)
    return bool(shared[0] > 0)


def _train_epoch(model, comm, step, X, y, steps, progress, batch_callbacks, epoch) -> dict:
    loss_fn, out = model.loss, model.out_features
    sums = np.zeros(3)                  # loss sum, rows, correct (this rank)
    for batch, (rows, n_global) in enumerate(steps):
        loss_sum, correct = step(X, y, rows, n_global, epoch, batch)
        sums += (loss_sum, rows.shape[0], correct)
        step.stats.samples += n_global
        if batch_callbacks:
            # The global batch's loss (a second, tiny Allreduce per step).
            shared = np.array([loss_sum])
            comm.allreduce_sum(shared)
            value = shared[0] / loss_fn._denominator((n_global, out))
            for callback in batch_callbacks:
                callback.on_batch_end(batch, {"loss": value, "size": n_global})
            model.stop_training = _any_rank(comm, model.stop_training)
        else:
            value = loss_sum / loss_fn._denominator((max(rows.shape[0], 1), out))
        progress.batch(value, n_global)
        if model.stop_training:
            break
    comm.allreduce_sum(sums)
    n = int(sums[1])
    metrics = {"loss": sums[0] / loss_fn._denominator((n, out))}
    if loss_fn.is_classification:
        metrics["accuracy"] = sums[2] / _n_predictions(loss_fn, n, out)
    return metrics


def _run(model, comm, X, y, validation, *, epochs, batch_size, shuffle, callbacks,
         verbose, sharded, shard_sizes) -> History:
    root = comm.rank == 0
    stats = CommStats(ranks=comm.size)
    step = _Stepper(model, comm, stats)
    # Only rank 0 writes checkpoints; the other callbacks run on every rank,
    # on the same reduced metrics, so that their decisions agree.
    if not root:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
    batch_callbacks = [cb for cb in callbacks if _overrides(cb, "on_batch_end")]
    n_total = sum(shard_sizes) if sharded else X.shape[0]
    progress = _Progress(verbose if root else 0, epochs, n_total)
    n_draw = max(shard_sizes) if sharded else X.shape[0]

    def run_epoch(epoch: int) -> tuple[dict, dict]:
        order = _epoch_order(model, X.shape[0], n_draw, shuffle)
        steps = (_steps_sharded(order, batch_size, shard_sizes) if sharded
                 else _steps_replicated(order, batch_size, comm.rank, comm.size))
        metrics = _train_epoch(model, comm, step, X, y, steps, progress,
                               batch_callbacks, epoch)
        if validation is not None:
            scores = _evaluate(model, comm, validation, sharded)
            metrics.update({f"val_{name}": value for name, value in scores.items()})
        return metrics, {}

    started = time.perf_counter()
    history = _epoch_loop(model, callbacks, progress, epochs, run_epoch,
                          agree=lambda stop: _any_rank(comm, stop))
    stats.train_seconds = time.perf_counter() - started
    if not root:
        history = History()               # rank 0 returns the full History
    history.comm_stats = stats
    return history


def fit(model, X, y, *, comm, sharded: bool = False, epochs: int = 1, batch_size: int = 32,
        shuffle: bool = True, validation_data=None, validation_split: float = 0.0,
        callbacks=None, verbose: int = 1, restarts: int = 1,
        track_gradients: bool = False) -> History:
    """Data-parallel :meth:`Sequential.fit` over the ranks of ``comm``.

    Called by ``model.fit(..., comm=comm)``; the arguments are those of
    :meth:`Sequential.fit` (``batch_size`` per rank), plus:

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Every rank of it must call ``fit`` with the same model architecture,
        loss, optimizer and settings (checked at the start).
    sharded : bool, default False
        False: every rank passes the same data set, and the ranks split each
        global batch of a shared permutation.  True: each rank passes only its
        own rows (e.g. from :func:`tinycore.data.load_npy` with ``comm``), and
        shuffles them locally.

    Returns
    -------
    History
        On rank 0 the full History; an empty one on the other ranks.  On
        every rank, ``history.comm_stats`` (:class:`CommStats`) says how
        long this rank spent in ``Allreduce``.
    """
    comm = _communicator(comm)
    if restarts != 1:
        raise ValueError("restarts is not supported with comm (train one run per job)")
    if track_gradients:
        raise ValueError("track_gradients is not supported with comm")
    if not isinstance(sharded, (bool, np.bool_)):
        raise TypeError(f"sharded must be True or False, got {type(sharded).__name__}")
    model._require_compiled()

    def prepare():
        # Each rank checks its own data: one rank's bad file must not leave
        # the others waiting, so failures are agreed on (see _agree).
        X_, y_ = model._check_data(X, y)
        epochs_ = check_positive_int(epochs, "epochs")
        batch_ = check_positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {type(shuffle).__name__}")
        X_, y_, validation_ = _split_validation(model, X_, y_, validation_data,
                                                validation_split)
        return X_, y_, validation_, epochs_, batch_, _check_callbacks(callbacks)

    X, y, validation, epochs, batch_size, callbacks = _agree(comm, "checking its data", prepare)
    run = dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle,
               batch_callbacks=any(_overrides(cb, "on_batch_end") for cb in callbacks))
    n_val = -1 if validation is None else validation[0].shape[0]
    _check_same(comm, _fingerprint(model, run, X.shape[0], n_val, bool(sharded)))
    shard_sizes = comm.allgather_object(X.shape[0]) if sharded else [X.shape[0]]
    model._forward_current = False
    # Start identical: rank 0's weights, generator (the shuffling) and
    # optimizer step count (a schedule's position).
    comm.bcast_array(model.param_buffer)
    model._rng.bit_generator.state = comm.bcast_object(model._rng.bit_generator.state)
    model.optimizer.iterations = comm.bcast_object(model.optimizer.iterations)
    try:
        return _run(model, comm, X, y, validation, epochs=epochs, batch_size=batch_size,
                    shuffle=shuffle, callbacks=callbacks, verbose=verbose,
                    sharded=bool(sharded), shard_sizes=shard_sizes)
    except TrainingDivergedError:
        raise                             # agreed: every rank raises it at the same step
    except BaseException as exc:
        if comm.size == 1:
            raise
        # Any other failure is this rank's alone: the others would wait in
        # the next collective forever.  Say why, then end them all.
        print(f"tinycore.distributed: rank {comm.rank} of {comm.size} failed with "
              f"{type(exc).__name__}: {exc}; calling MPI_Abort so that the other ranks "
              "stop instead of waiting for it", file=sys.stderr, flush=True)
        comm.abort(1)
        raise                             # pragma: no cover - abort does not return
