"""tinycore.distributed and tinycore.data in one process.

The multi-rank tests are in tests/mpi (run under mpiexec by .ci/run); here:
the sharding arithmetic, memory-mapped loading, argument checks, the whole
distributed loop on a one-rank communicator (bit-identical to plain fit), and,
when mpi4py and mpiexec are installed, jobs in which one rank raises or dies.
"""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tinycore as tc
from tinycore import distributed
from tinycore.distributed import _SingleProcess, _steps_replicated, _steps_sharded


def make_model(loss="cross_entropy", optimizer=None, dtype="float64", seed=1):
    out = "softmax" if loss == "cross_entropy" else "linear"
    model = tc.Sequential([tc.Dense(4, 16, activation="tanh"),
                           tc.Dense(16, 3, activation=out)], dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer=optimizer or tc.SGD(lr=0.3))
    return model


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(103, 4)), rng.integers(0, 3, 103)


# -- sharding arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shard_bounds_cover_the_rows_once_in_rank_order(n_rows, size):
    bounds = [tc.data.shard_bounds(n_rows, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(part) for part in np.array_split(np.arange(n_rows), size)]


@pytest.mark.parametrize("args, error", [((5, 2, 2), ValueError), ((5, -1, 2), ValueError),
                                         ((5, 0, 0), ValueError), ((-1, 0, 1), ValueError),
                                         ((5, 0.0, 1), TypeError), ((5, 0, True), TypeError)])
def test_shard_bounds_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        tc.data.shard_bounds(*args)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_replicated_steps_split_each_global_batch(size):
    # 23 rows, 4 per rank: every global batch is 4*size consecutive rows of
    # the order, rank r takes [4r, 4r+4) of it; the ranks' rows add up to it.
    order = np.arange(23)[::-1].copy()
    per_rank = [list(_steps_replicated(order, 4, rank, size)) for rank in range(size)]
    n_steps = -(-23 // (4 * size))
    assert all(len(steps) == n_steps for steps in per_rank)
    for k in range(n_steps):
        n_global = per_rank[0][k][1]
        assert all(steps[k][1] == n_global for steps in per_rank)
        joined = np.concatenate([steps[k][0] for steps in per_rank])
        np.testing.assert_array_equal(joined, order[k * 4 * size:][:n_global])
    # The last global batch of 3 ranks (23 - 12 = 11 rows): 4, 4, 3.
    if size == 3:
        assert [len(steps[-1][0]) for steps in per_rank] == [4, 4, 3]


def test_sharded_steps_run_until_the_largest_shard_is_done():
    sizes = [5, 3, 0]
    steps = [list(_steps_sharded(np.arange(n), 2, sizes)) for n in sizes]
    assert [len(s) for s in steps] == [3, 3, 3]
    assert [n_global for _, n_global in steps[0]] == [4, 3, 1]
    assert [len(rows) for rows, _ in steps[1]] == [2, 1, 0]


# -- memory-mapped loading ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_load_npy_maps_only_the_shard(tmp_path, dtype):
    array = np.arange(7 * 3, dtype=dtype).reshape(7, 3)
    path = tmp_path / "a.npy"
    np.save(path, array)
    whole = tc.data.load_npy(path)
    assert isinstance(whole, np.memmap) and not whole.flags.writeable
    np.testing.assert_array_equal(whole, array)
    parts = [tc.data.load_npy(path, rank=r, size=3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), array)
    assert [p.shape[0] for p in parts] == [3, 2, 2]
    # Only the shard's bytes are mapped: the map starts at its first row.
    assert parts[1].offset == parts[0].offset + 3 * 3 * array.itemsize
    assert tc.data.load_npy(path, comm=_SingleProcess()).shape == (7, 3)


def test_load_npy_labels_and_empty_shards(tmp_path):
    np.save(tmp_path / "y.npy", np.arange(2, dtype=np.int64))
    parts = [tc.data.load_npy(tmp_path / "y.npy", rank=r, size=3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0], [1], []]
    assert parts[2].dtype == np.int64


def test_load_npy_rejects_what_cannot_be_mapped_by_rows(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((3, 2))))
    with pytest.raises(ValueError, match="Fortran order"):
        tc.data.load_npy(tmp_path / "f.npy")
    np.save(tmp_path / "o.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        tc.data.load_npy(tmp_path / "o.npy")
    (tmp_path / "t.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="not an .npy file"):
        tc.data.load_npy(tmp_path / "t.npy")
    with pytest.raises(ValueError, match="both rank and size"):
        tc.data.load_npy(tmp_path / "f.npy", rank=0)
    with pytest.raises(ValueError, match="not both"):
        tc.data.load_npy(tmp_path / "f.npy", comm=_SingleProcess(), rank=0, size=1)


def test_a_mapped_file_trains_like_the_array(tmp_path, xy):
    X, y = xy
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    a, b = make_model(), make_model()
    a.fit(X, y, epochs=2, batch_size=10, verbose=0)
    b.fit(tc.data.load_npy(tmp_path / "X.npy"), tc.data.load_npy(tmp_path / "y.npy"),
          epochs=2, batch_size=10, verbose=0, comm=_SingleProcess(), sharded=True)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)


# -- the distributed loop on one rank ----------------------------------------------------


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "sse"])
@pytest.mark.parametrize("optimizer", [lambda: tc.SGD(lr=0.05), lambda: tc.Adam(lr=0.01),
                                       lambda: tc.SGD(lr=0.05, momentum=0.9, clipnorm=1.0)],
                         ids=["sgd", "adam", "momentum-clip"])
def test_one_rank_is_bit_identical_to_plain_fit(xy, loss, optimizer):
    X, y = xy
    y = y if loss == "cross_entropy" else np.eye(3)[y]
    a, b = make_model(loss, optimizer()), make_model(loss, optimizer())
    expected = a.fit(X, y, epochs=3, batch_size=10, validation_split=0.2, verbose=0)
    history = b.fit(X, y, epochs=3, batch_size=10, validation_split=0.2, verbose=0,
                    comm=_SingleProcess())
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)
    assert history.history == expected.history
    assert a.optimizer.iterations == b.optimizer.iterations
    stats = history.comm_stats
    assert stats.ranks == 1 and stats.steps == 3 * 9 and stats.samples == 3 * 82
    assert stats.allreduce_bytes == b.grad_buffer.nbytes and stats.samples_per_second > 0


def test_one_rank_custom_loss_takes_the_per_layer_path(xy):
    class MyMSE(tc.losses.MSE):
        pass

    X, y = xy
    Y = np.eye(3)[y]
    a = make_model(loss=MyMSE())
    b = make_model(loss=MyMSE())
    assert b._plan is None
    a.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    b.fit(X, Y, epochs=2, batch_size=16, verbose=0, comm=_SingleProcess())
    np.testing.assert_allclose(a.param_buffer, b.param_buffer, rtol=1e-12)


def test_one_rank_divergence_raises_like_plain_fit(xy):
    X, y = xy
    Y = np.eye(3)[y]
    Y[50] = 1e300
    a, b = make_model("mse"), make_model("mse")
    with pytest.raises(tc.TrainingDivergedError) as plain:
        a.fit(X, Y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    with pytest.raises(tc.TrainingDivergedError) as dist:
        b.fit(X, Y, epochs=1, batch_size=10, shuffle=False, verbose=0, comm=_SingleProcess())
    assert (dist.value.epoch, dist.value.batch) == (plain.value.epoch, plain.value.batch) == (0, 5)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)


def test_one_rank_callbacks_stop_and_see_the_batch_loss(xy):
    X, y = xy

    class StopAfter(tc.callbacks.Callback):
        def __init__(self):
            self.losses = []

        def on_batch_end(self, batch, logs=None):
            self.losses.append(logs["loss"])
            if batch == 2:
                self.model.stop_training = True

    a, b = make_model(), make_model()
    ca, cb = StopAfter(), StopAfter()
    ha = a.fit(X, y, epochs=3, batch_size=10, verbose=0, callbacks=[ca])
    hb = b.fit(X, y, epochs=3, batch_size=10, verbose=0, callbacks=[cb], comm=_SingleProcess())
    assert ca.losses == cb.losses and len(cb.losses) == 3
    assert ha.history == hb.history
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)


# -- arguments ----------------------------------------------------------------------------


def test_fit_arguments_with_comm(xy):
    X, y = xy
    model = make_model()
    with pytest.raises(ValueError, match="restarts"):
        model.fit(X, y, restarts=2, comm=_SingleProcess())
    with pytest.raises(ValueError, match="track_gradients"):
        model.fit(X, y, track_gradients=True, comm=_SingleProcess())
    with pytest.raises(TypeError, match="sharded"):
        model.fit(X, y, sharded="yes", comm=_SingleProcess())
    with pytest.raises(ValueError, match="sharded=True needs comm"):
        model.fit(X, y, sharded=True)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, y, batch_size=0, comm=_SingleProcess())
    with pytest.raises(ValueError, match="X is empty"):      # on that rank; the others get a RuntimeError
        model.fit(X[:0], y[:0], comm=_SingleProcess(), sharded=True)
    with pytest.raises(RuntimeError, match="compile"):
        tc.Sequential([tc.Dense(4, 3)]).fit(X, y, comm=_SingleProcess())


def test_comm_must_be_an_mpi_communicator(xy, monkeypatch):
    X, y = xy
    model = make_model()
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # as if not installed
    with pytest.raises(ImportError, match=r"tinycore\[mpi\]"):
        model.fit(X, y, comm=object())
    monkeypatch.undo()
    pytest.importorskip("mpi4py.MPI")
    with pytest.raises(TypeError, match="intracommunicator"):
        model.fit(X, y, comm="COMM_WORLD")


def test_import_tinycore_does_not_import_mpi4py(tmp_path):
    # From tmp_path: `python -c` puts the working directory first on sys.path,
    # and a checkout's tinycore may have no compiled modules.
    code = "import sys, tinycore; assert 'mpi4py' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_fingerprint_names_what_differs():
    class Two(_SingleProcess):
        size = 2

        def allgather_object(self, value):
            return [value, dict(value, batch_size=7)]

    with pytest.raises(ValueError, match="batch_size is 7 on rank 1 but 4 on rank 0"):
        distributed._check_same(Two(), {"batch_size": 4})


# -- jobs in which a rank fails (real MPI) ------------------------------------------------


_JOB = textwrap.dedent("""
    import os, sys, numpy as np, tinycore as tc
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    folder, how = sys.argv[1], sys.argv[2]

    class Fail(tc.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2 and comm.Get_rank() == 1:
                if how == "raise":
                    raise RuntimeError("rank 1 broke on purpose")
                os.kill(os.getpid(), 9)               # dies without a word

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 8)), rng.integers(0, 2, 400)
    model = tc.Sequential([tc.Dense(8, 16, activation="relu"),
                           tc.Dense(16, 2, activation="softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    checkpoint = tc.callbacks.ModelCheckpoint(os.path.join(folder, "last.safetensors"))
    model.fit(X, y, epochs=50, batch_size=8, verbose=0, comm=comm,
              callbacks=[checkpoint, Fail()])
    print("finished", comm.Get_rank())
""")


def _mpiexec():
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec is not on PATH")
    return mpiexec


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failing_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path, how):
    mpiexec = _mpiexec()
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(tc.__file__))] + sys.path))
    started = time.perf_counter()
    job = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), str(tmp_path), how],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert job.returncode != 0
    assert "finished" not in job.stdout
    assert elapsed < 60
    if how == "raise":
        assert "rank 1 of 2 failed with RuntimeError: rank 1 broke on purpose" in job.stderr
    # The checkpoint of epoch 2 (written before epoch 3 began) is whole.
    restored = tc.load(tmp_path / "last.safetensors")
    assert np.isfinite(restored.param_buffer).all()
    assert [p.name for p in tmp_path.iterdir() if p.name != "job.py"] == ["last.safetensors"]
