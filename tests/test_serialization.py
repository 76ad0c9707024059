"""Saving and loading: round trips, resuming, atomic writes, bad files."""
import json
import os
import struct

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tinycore as tc
from tinycore import serialization

pytest.importorskip("safetensors")


def _model(dtype="float32"):
    model = tc.Sequential([tc.Dense(4, 8, activation="leaky_relu", alpha=0.2),
                           tc.Dense(8, 6, activation="tanh", bias=False),
                           tc.Dense(6, 3, activation="softmax")], dtype=dtype, seed=1)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    return model


@pytest.fixture
def data(rng):
    return rng.normal(size=(40, 4)), rng.integers(0, 3, 40)


def test_round_trip_predicts_bit_for_bit(tmp_path, data, dtype):
    X, y = data
    model = _model(dtype.name)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = tc.load(path)
    assert loaded.dtype == model.dtype
    assert repr(loaded) .split("], ")[0] == repr(model).split("], ")[0]   # same layers
    assert_array_equal(loaded.param_buffer, model.param_buffer)
    assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.loss.name == "cross_entropy"


def test_uncompiled_model_round_trip(tmp_path, data):
    X, _ = data
    model = tc.Sequential([tc.Dense(4, 2)], seed=0)
    model.save(tmp_path / "m.safetensors")
    loaded = tc.load(tmp_path / "m.safetensors")
    assert loaded.loss is None
    assert_array_equal(loaded.predict(X), model.predict(X))


def test_the_file_is_safetensors_with_json_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    _model().save(path)
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    assert set(header) - {"__metadata__"} == {"layers.0.W", "layers.0.b", "layers.1.W",
                                              "layers.2.W", "layers.2.b"}
    assert header["layers.0.W"]["dtype"] == "F32" and header["layers.0.W"]["shape"] == [4, 8]
    architecture = json.loads(header["__metadata__"]["architecture"])
    assert architecture["layers"][0] == {"in_features": 4, "out_features": 8,
                                         "activation": "leaky_relu", "alpha": 0.2,
                                         "bias": True}


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    model = _model()
    model.save(path)
    good = path.read_bytes()
    model.layers[0].W[...] = 0.0

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.safetensors"]          # no temporary left


def _rewrite_metadata(path, **changes):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header["__metadata__"].update(changes)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size:])


def test_bad_files_raise_value_error(tmp_path):
    path = tmp_path / "m.safetensors"
    _model().save(path)
    good = path.read_bytes()
    cases = {
        "empty": b"",
        "short": good[:5],
        "truncated header": good[:40],
        "truncated tensors": good[:-10],
        "garbage": os.urandom(300),
        "json garbage": struct.pack("<Q", 4) + b"{{{{",
    }
    for name, content in cases.items():
        path.write_bytes(content)
        with pytest.raises(ValueError):
            tc.load(path)


@pytest.mark.parametrize("field,value,match", [
    ("format", "other", "not a tinycore model file"),
    ("format_version", "99", "format version"),
    ("architecture", "{not json", "'architecture' is missing or corrupted"),
    ("architecture", json.dumps({"dtype": "float32", "layers": [
        {"in_features": 4, "out_features": 9, "activation": "relu", "alpha": 0.01,
         "bias": True}]}), "do not match the architecture"),
    ("architecture", json.dumps({"dtype": "int8", "layers": []}),
     "do not match the architecture"),
    ("architecture", json.dumps({"dtype": "float32", "layers": [
        {"in_features": 4, "out_features": 8, "activation": "relux", "alpha": 0.01,
         "bias": True}]}), "do not match the architecture"),
    ("training", json.dumps({"loss": "hinge", "optimizer": None}), "invalid loss"),
    ("rng", json.dumps({"bit_generator": "nope"}), "random generator state"),
])
def test_inconsistent_metadata_raises_value_error(tmp_path, field, value, match):
    path = tmp_path / "m.safetensors"
    _model().save(path)
    _rewrite_metadata(path, **{field: value})
    with pytest.raises(ValueError, match=match):
        tc.load(path)


def test_shape_mismatch_between_weights_and_architecture(tmp_path):
    path = tmp_path / "m.safetensors"
    _model().save(path)
    architecture = json.loads(serialization._read_metadata(path.read_bytes(), "m")[1]
                              ["architecture"])
    architecture["layers"][0]["out_features"] = 7
    architecture["layers"][1]["in_features"] = 7
    _rewrite_metadata(path, architecture=json.dumps(architecture))
    with pytest.raises(ValueError, match=r"layers.0.W has shape \[4, 8\]; the architecture needs \[4, 7\]"):
        tc.load(path)


def test_nan_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    model = _model("float64")
    model.save(path)
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    start = 8 + size + header["layers.0.W"]["data_offsets"][0]
    data[start:start + 8] = struct.pack("<d", float("nan"))
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="layers.0.W contains NaN"):
        tc.load(path)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        tc.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("make", [lambda: tc.SGD(lr=0.05, momentum=0.9),
                                  lambda: tc.Adam(lr=0.01),
                                  lambda: tc.SGD(lr=tc.schedules.StepDecay(0.1, 3, 0.5))],
                         ids=["sgd-momentum", "adam", "sgd-schedule"])
def test_resume_continues_exactly(tmp_path, data, make):
    X, y = data

    def fresh():
        model = _model("float64")
        model.compile(loss="cross_entropy", optimizer=make())
        return model

    uninterrupted = fresh()
    full = uninterrupted.fit(X, y, epochs=4, batch_size=8, verbose=0)
    first = fresh()
    half = first.fit(X, y, epochs=2, batch_size=8, verbose=0)
    first.save(tmp_path / "checkpoint.safetensors", include_optimizer=True)
    resumed = tc.load(tmp_path / "checkpoint.safetensors")
    assert resumed.optimizer.iterations == first.optimizer.iterations
    rest = resumed.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert half.history["loss"] + rest.history["loss"] == full.history["loss"]
    assert_array_equal(resumed.param_buffer, uninterrupted.param_buffer)


def test_without_optimizer_state_the_hyper_parameters_still_come_back(tmp_path, data):
    X, y = data
    model = _model()
    model.compile(loss="cross_entropy", optimizer=tc.Adam(lr=0.02, beta1=0.8))
    model.fit(X, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = tc.load(tmp_path / "m.safetensors")
    assert isinstance(loaded.optimizer, tc.Adam)
    assert loaded.optimizer.lr == 0.02 and loaded.optimizer.beta1 == 0.8
    assert loaded.optimizer.iterations == 0


def test_model_checkpoint_writes_loadable_files(tmp_path, data):
    X, y = data
    model = _model()
    path = tmp_path / "epoch-{epoch}.safetensors"
    model.fit(X, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[tc.callbacks.ModelCheckpoint(path, monitor="loss")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-1.safetensors", "epoch-2.safetensors", "epoch-3.safetensors"]
    assert_array_equal(tc.load(tmp_path / "epoch-3.safetensors").predict(X), model.predict(X))


def test_model_checkpoint_save_best_only(tmp_path, data):
    X, y = data
    model = _model()
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=30.0))   # erratic losses
    saved = []

    class Record(tc.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved.append((logs["loss"], (tmp_path / "best.safetensors").stat().st_mtime_ns
                          if (tmp_path / "best.safetensors").exists() else None))

    checkpoint = tc.callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss",
                                              save_best_only=True)
    history = model.fit(X, y, epochs=6, batch_size=40, verbose=0,
                        callbacks=[checkpoint, Record()])
    losses = history.history["loss"]
    best = int(np.argmin(losses))
    # The file holds the best epoch's model: its loss on the data equals the best
    # epoch's end-of-epoch weights, which we can only check through evaluate.
    loaded = tc.load(tmp_path / "best.safetensors")
    assert loaded is not None and len(saved) == 6
    # Written only on improvements: its time changes exactly when the loss improved.
    running_best, changes = np.inf, 0
    for loss, _ in saved:
        if loss < running_best:
            running_best, changes = loss, changes + 1
    times = {mtime for _, mtime in saved if mtime is not None}
    assert len(times) == changes and best < 6


@pytest.mark.parametrize("change,match", [
    (lambda arch: arch["layers"][0].update(activation="relux"), "invalid architecture"),
    (lambda arch: arch.update(dtype="int8"), "invalid architecture"),
])
def test_architecture_that_fits_the_tensors_but_is_invalid(tmp_path, change, match):
    path = tmp_path / "m.safetensors"
    _model().save(path)
    architecture = json.loads(serialization._read_metadata(path.read_bytes(), "m")[1]
                              ["architecture"])
    change(architecture)
    _rewrite_metadata(path, architecture=json.dumps(architecture))
    with pytest.raises(ValueError, match=match):
        tc.load(path)
