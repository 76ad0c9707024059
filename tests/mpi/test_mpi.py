"""Data-parallel training on real MPI ranks (run under mpiexec -n 2 or -n 3).

Each rank runs every test; assertions about other ranks go through
``allgather`` so that all ranks pass or fail together instead of one rank
leaving the others waiting in a collective.
"""
import hashlib
import os
import threading
import time

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")
import tinycore as tc  # noqa: E402
from tinycore import distributed  # noqa: E402

comm = MPI.COMM_WORLD
RANK, SIZE = comm.Get_rank(), comm.Get_size()


def make_model(loss="cross_entropy", optimizer=None, seed=3):
    out = "softmax" if loss == "cross_entropy" else "linear"
    model = tc.Sequential([tc.Dense(5, 12, activation="tanh"),
                           tc.Dense(12, 3, activation=out)], dtype="float64", seed=seed)
    model.compile(loss=loss, optimizer=optimizer or tc.SGD(lr=0.2))
    return model


def data(n=92, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = rng.integers(0, 3, n)
    return X, y


def targets(loss, y):
    return y if loss == "cross_entropy" else np.eye(3)[y]


def all_ranks(value):
    return comm.allgather(value)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "sse"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_matches_single_process_with_the_global_batch(loss, optimizer):
    # 92 rows, 5 per rank: the last global batch (92 % (5 N) = 2 rows) leaves
    # ranks 1.. with zero rows, so the weighting of partial batches is checked.
    X, y = data()
    y = targets(loss, y)
    opt = (lambda: tc.SGD(lr=0.05 if loss == "sse" else 0.2)) if optimizer == "sgd" \
        else (lambda: tc.Adam(lr=0.01))
    reference = make_model(loss, opt())
    expected = reference.fit(X, y, epochs=3, batch_size=5 * SIZE, validation_split=0.15,
                             verbose=0)
    model = make_model(loss, opt())
    history = model.fit(X, y, epochs=3, batch_size=5, validation_split=0.15, verbose=0,
                        comm=comm)
    np.testing.assert_allclose(model.param_buffer, reference.param_buffer,
                               rtol=1e-11, atol=1e-13)
    if RANK == 0:
        assert history.history.keys() == expected.history.keys()
        for name, values in expected.history.items():
            np.testing.assert_allclose(history.history[name], values, rtol=1e-11, err_msg=name)
    else:
        assert history.history == {} and history.epoch == []
    assert history.comm_stats.steps == 3 * -(-78 // (5 * SIZE))


class StepDigests(tc.callbacks.Callback):
    """After every step: is param_buffer bit-identical on every rank?"""

    def __init__(self):
        self.identical = []

    def on_batch_end(self, batch, logs=None):
        digest = hashlib.sha256(self.model.param_buffer.tobytes()).hexdigest()
        self.identical.append(len(set(comm.allgather(digest))) == 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_stay_bit_identical_after_every_step(dtype):
    X, y = data(150)
    # Different seeds per rank: rank 0's weights must be broadcast first.
    model = tc.Sequential([tc.Dense(5, 32, activation="relu"),
                           tc.Dense(32, 3, activation="softmax")], dtype=dtype, seed=RANK)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1, momentum=0.9))
    digests = StepDigests()
    model.fit(X, y, epochs=2, batch_size=7, verbose=0, callbacks=[digests], comm=comm)
    assert len(digests.identical) == 2 * -(-150 // (7 * SIZE))
    assert all(digests.identical)


def test_only_rank_0_writes_checkpoints_and_shows_progress(tmp_path, capsys):
    folder = comm.bcast(str(tmp_path) if RANK == 0 else None)
    X, y = data()
    model = make_model()
    checkpoint = tc.callbacks.ModelCheckpoint(
        os.path.join(folder, f"rank{RANK}-{{epoch}}.safetensors"), save_best_only=False)
    history = model.fit(X, y, epochs=2, batch_size=8, verbose=2, callbacks=[checkpoint],
                        comm=comm)
    printed = capsys.readouterr().out
    comm.Barrier()
    files = sorted(os.listdir(folder))
    assert files == ["rank0-1.safetensors", "rank0-2.safetensors"]
    assert ("epoch 2/2" in printed) == (RANK == 0)
    assert (len(history.epoch) == 2) == (RANK == 0)
    restored = tc.load(os.path.join(folder, "rank0-2.safetensors"))
    np.testing.assert_array_equal(restored.param_buffer, model.param_buffer)
    comm.Barrier()


def test_sharded_files_match_single_process_in_rank_order(tmp_path):
    folder = comm.bcast(str(tmp_path) if RANK == 0 else None)
    X, y = data(23 * SIZE + 1)
    if RANK == 0:
        np.save(os.path.join(folder, "X.npy"), X)
        np.save(os.path.join(folder, "y.npy"), y)
    comm.Barrier()
    X_part = tc.data.load_npy(os.path.join(folder, "X.npy"), comm=comm)
    y_part = tc.data.load_npy(os.path.join(folder, "y.npy"), comm=comm)
    assert isinstance(X_part, np.memmap)
    bounds = [tc.data.shard_bounds(X.shape[0], r, SIZE) for r in range(SIZE)]
    np.testing.assert_array_equal(X_part, X[slice(*bounds[RANK])])
    b = 4
    model = make_model()
    model.fit(X_part, y_part, epochs=2, batch_size=b, shuffle=False, verbose=0,
              comm=comm, sharded=True)
    # Single process: step k takes rows [k b, (k+1) b) of every shard, in rank order.
    order = [np.arange(*bounds[r])[k:k + b] for k in range(0, 24, b) for r in range(SIZE)]
    order = np.concatenate(order)
    reference = make_model()
    reference.fit(X[order], y[order], epochs=2, batch_size=b * SIZE, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.param_buffer, reference.param_buffer, rtol=1e-11, atol=1e-13)
    comm.Barrier()


def test_divergence_on_one_rank_stops_every_rank_at_the_same_step():
    X, y = data(40)
    y = targets("mse", y)
    if RANK == SIZE - 1:
        y[-1] = 1e300               # finite, but its squared error overflows
    model = make_model("mse")
    with pytest.raises(tc.TrainingDivergedError) as info:
        model.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0, comm=comm,
                  sharded=True, callbacks=[])
    where = all_ranks((info.value.epoch, info.value.batch, info.value.layer))
    assert len(set(where)) == 1 and where[0][:2] == (0, 9)
    digests = all_ranks(hashlib.sha256(model.param_buffer.tobytes()).hexdigest())
    assert len(set(digests)) == 1
    assert np.isfinite(model.param_buffer).all()


@pytest.mark.skipif(SIZE < 2, reason="needs a second rank")
def test_different_settings_fail_on_every_rank_instead_of_hanging():
    X, y = data()
    model = make_model()
    with pytest.raises(ValueError, match="batch_size is"):
        model.fit(X, y, batch_size=4 + RANK, verbose=0, comm=comm)


@pytest.mark.skipif(SIZE < 2, reason="needs a second rank")
def test_bad_data_on_one_rank_fails_on_every_rank():
    X, y = data()
    if RANK == 1:
        X = X.copy()
        X[3, 2] = np.nan
    model = make_model()
    if RANK == 1:
        with pytest.raises(ValueError, match="NaN|finite"):
            model.fit(X, y, verbose=0, comm=comm)
    else:
        with pytest.raises(RuntimeError, match="rank 1 of .* failed while checking its data"):
            model.fit(X, y, verbose=0, comm=comm)


@pytest.mark.skipif(SIZE < 2, reason="needs a second rank to wait for")
def test_allreduce_releases_the_gil():
    # Rank 0 enters Allreduce at once and waits ~0.5 s for the last rank;
    # meanwhile a Python thread of rank 0 must keep counting.
    buffer = np.ones(1000)
    wrapped = distributed._communicator(comm)
    counter, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    comm.Barrier()
    if RANK == SIZE - 1:
        time.sleep(0.5)
        wrapped.allreduce_sum(buffer)
        during = None
    else:
        thread = threading.Thread(target=spin)
        thread.start()
        time.sleep(0.01)
        before, started = counter[0], time.perf_counter()
        wrapped.allreduce_sum(buffer)
        waited, during = time.perf_counter() - started, counter[0] - before
        stop.set()
        thread.join()
        assert waited > 0.3
    assert buffer[0] == SIZE
    results = all_ranks(during)
    assert all(r is None or r > 10_000 for r in results), results
