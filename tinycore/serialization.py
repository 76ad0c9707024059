"""Saving and loading models as one ``.safetensors`` file, without pickle.

A file holds the weights in the model's dtype (``layers.{i}.W``,
``layers.{i}.b``) and, in its metadata, JSON for everything else: the
architecture, the loss and optimizer of a compiled model, the state of the
model's random generator (so that a resumed ``fit`` shuffles as an
uninterrupted one would), and with ``include_optimizer=True`` the optimizer's
step count and state buffers (stored as tensors ``optimizer.{name}``).

Writing is atomic: the bytes go to a temporary file in the same folder, are
flushed to disk, then renamed over the target, so a crash mid-save never
leaves a half-written file where a good one was.  Reading checks everything
before building anything, and a file that is truncated, corrupted, foreign or
inconsistent raises ``ValueError``.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "tinycore.Sequential"
FORMAT_VERSION = 1
# The safetensors header is at most 100 MB (the format's own limit).
_MAX_HEADER = 100_000_000


def _require_safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(
            "saving and loading need the safetensors package: "
            'pip install "tinycore[save]"'
        ) from None
    return safetensors.numpy


# -- saving ---------------------------------------------------------------------


def _architecture(model) -> dict:
    return {
        "dtype": model.dtype.name,
        "layers": [
            {"in_features": layer.in_features, "out_features": layer.out_features,
             "activation": layer.activation, "alpha": layer.alpha,
             "bias": layer.use_bias}
            for layer in model.layers
        ],
    }


def _training_setup(model, include_optimizer: bool, tensors: dict) -> dict | None:
    if model.loss is None:
        return None
    setup = {"loss": model.loss.name, "optimizer": None}
    state_dict = getattr(model.optimizer, "state_dict", None)
    if state_dict is not None:
        state = state_dict()
        arrays = state.pop("state", {}) or {}
        if include_optimizer:
            for name, array in arrays.items():
                tensors[f"optimizer.{name}"] = np.ascontiguousarray(array)
        else:
            state.pop("iterations", None)
        state["with_state"] = bool(include_optimizer)
        setup["optimizer"] = state
    return setup


def save(model, path, *, include_optimizer: bool = False) -> None:
    """Write ``model`` to ``path`` as one safetensors file, atomically.

    Parameters
    ----------
    model : tinycore.Sequential
    path : str or os.PathLike
    include_optimizer : bool, default False
        Also store the optimizer's step count and state, so that training
        resumes exactly where it stopped.
    """
    st = _require_safetensors()
    tensors = {}
    for index, layer in enumerate(model.layers):
        tensors[f"layers.{index}.W"] = np.ascontiguousarray(layer.W)
        if layer.use_bias:
            tensors[f"layers.{index}.b"] = np.ascontiguousarray(layer.b)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": json.dumps(_architecture(model)),
        "training": json.dumps(_training_setup(model, include_optimizer, tensors)),
        "rng": json.dumps(model._rng.bit_generator.state),
    }
    _atomic_write(os.fspath(path), st.save(tensors, metadata=metadata))


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tinycore-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Also on KeyboardInterrupt: the old file stays, the temporary goes.
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- loading --------------------------------------------------------------------


def _read_metadata(data: bytes, path: str) -> tuple[dict, dict]:
    """The safetensors header and its ``__metadata__``, checked to be tinycore's."""
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (only {len(data)} bytes)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(_MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path} is not a safetensors file, or is truncated "
                         f"(header of {header_size} bytes in a file of {len(data)})")
    try:
        header = json.loads(data[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # (json.JSONDecodeError is a ValueError; absurd nesting a RecursionError.)
        raise ValueError(f"{path} has a corrupted header: {type(exc).__name__}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tinycore model file (no tinycore metadata)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"{path} has format version {metadata.get('format_version')!r}; "
                         f"this tinycore reads version {str(FORMAT_VERSION)!r}")
    return header, metadata


def _json_field(metadata: dict, key: str, path: str):
    try:
        return json.loads(metadata[key])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: metadata field {key!r} is missing or corrupted "
                         f"({type(exc).__name__})") from None


def _read_tensors(st, data: bytes, path: str) -> dict:
    try:
        return st.load(data)
    except Exception as exc:   # the Rust core raises its own error types
        raise ValueError(f"{path}: corrupted or truncated tensor data ({exc})") from None


def _check_shapes_before_building(architecture, header: dict, path: str) -> None:
    """Compare the architecture with the stored tensors' shapes, from the
    header alone, so that a small file claiming a huge network is refused
    before anything is allocated."""
    try:
        layers = architecture["layers"]
        expected = {}
        for index, spec in enumerate(layers):
            expected[f"layers.{index}.W"] = [spec["in_features"], spec["out_features"]]
            if spec["bias"]:
                expected[f"layers.{index}.b"] = [spec["out_features"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: invalid architecture ({exc!r})") from None
    stored = {name: entry.get("shape") for name, entry in header.items()
              if name.startswith("layers.") and isinstance(entry, dict)}
    if set(stored) != set(expected):
        raise ValueError(f"{path}: the weights {sorted(stored)} do not match the "
                         f"architecture, which needs {sorted(expected)}")
    for name, shape in expected.items():
        if stored[name] != shape:
            raise ValueError(f"{path}: {name} has shape {stored[name]}; the "
                             f"architecture needs {shape}")


def _build_model(architecture, path: str):
    from tinycore.layers import Dense
    from tinycore.model import Sequential

    try:
        layers = [Dense(spec["in_features"], spec["out_features"],
                        activation=spec["activation"], bias=spec["bias"],
                        alpha=spec["alpha"])
                  for spec in architecture["layers"]]
        return Sequential(layers, dtype=architecture["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid architecture ({exc})") from None


def _restore_weights(model, tensors: dict, path: str) -> None:
    expected = {}
    for index, layer in enumerate(model.layers):
        expected[f"layers.{index}.W"] = layer.W
        if layer.use_bias:
            expected[f"layers.{index}.b"] = layer.b
    weights = {name: array for name, array in tensors.items() if name.startswith("layers.")}
    if set(weights) != set(expected):
        raise ValueError(f"{path}: the weights {sorted(weights)} do not match the "
                         f"architecture, which needs {sorted(expected)}")
    for name, target in expected.items():
        array = weights[name]
        if array.shape != target.shape or array.dtype != target.dtype:
            raise ValueError(f"{path}: {name} has shape {array.shape} and dtype "
                             f"{array.dtype}; the architecture needs {target.shape} "
                             f"{target.dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: {name} contains NaN or infinity")
        target[...] = array


def _restore_training(model, setup, tensors: dict, path: str) -> None:
    from tinycore import optimizers

    if setup is None:
        return
    try:
        saved = setup["optimizer"]
        optimizer = "sgd"
        if saved is not None:
            optimizer = optimizers.from_state_dict(
                {**saved, "state": {name[len("optimizer."):]: array
                                    for name, array in tensors.items()
                                    if name.startswith("optimizer.")}},
                model)
        model.compile(loss=setup["loss"], optimizer=optimizer)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid loss or optimizer ({exc})") from None


def load(path):
    """Rebuild the model saved at ``path`` (and its optimizer, if it was saved).

    Returns
    -------
    tinycore.Sequential
        Predictions equal the saved model's bit for bit; a model saved with
        ``include_optimizer=True`` resumes training exactly.

    Raises
    ------
    ValueError
        For a missing part, a truncated, corrupted or foreign file, or weights
        that disagree with the architecture.
    """
    st = _require_safetensors()
    path = os.fspath(path)
    with open(path, "rb") as source:
        data = source.read()
    header, metadata = _read_metadata(data, path)
    architecture = _json_field(metadata, "architecture", path)
    setup = _json_field(metadata, "training", path)
    rng_state = _json_field(metadata, "rng", path)
    _check_shapes_before_building(architecture, header, path)
    tensors = _read_tensors(st, data, path)
    model = _build_model(architecture, path)
    _restore_weights(model, tensors, path)
    _restore_training(model, setup, tensors, path)
    try:
        model._rng.bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"{path}: invalid random generator state ({exc})") from None
    return model
