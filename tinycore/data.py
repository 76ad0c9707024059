"""Loading data sets that need not fit in memory: ``.npy`` files, memory-mapped,
whole or one rank's shard of them.

A memory-mapped array reads a page of the file from disk only when a row on
it is touched, so a data set larger than memory can be trained on, and the
ranks of a data-parallel job (:mod:`tinycore.distributed`) each read only
their own rows.  Save the data in the model's dtype (``float32`` by default)
and the labels as ``int64``: ``fit`` then uses the mapped rows as they are
instead of converting a copy.

Examples
--------
>>> import numpy as np, tempfile, os, tinycore as tc
>>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
>>> np.save(path, np.arange(10, dtype=np.float32).reshape(5, 2))
>>> tc.data.shard_bounds(5, rank=1, size=2)
(3, 5)
>>> tc.data.load_npy(path, rank=1, size=2)
memmap([[6., 7.],
        [8., 9.]], dtype=float32)
"""
from __future__ import annotations

import numbers
import os

import numpy as np

__all__ = ["shard_bounds", "load_npy"]


def _check_rank_size(rank, size) -> tuple[int, int]:
    for name, value in (("rank", rank), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    return int(rank), int(size)


def shard_bounds(n_rows: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n_rows`` that belong to ``rank`` of ``size``.

    Contiguous blocks in rank order whose sizes differ by at most one: the
    first ``n_rows % size`` ranks get one row more (as ``numpy.array_split``).
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral) or n_rows < 0:
        raise ValueError(f"n_rows must be an integer >= 0, got {n_rows!r}")
    rank, size = _check_rank_size(rank, size)
    base, extra = divmod(int(n_rows), size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def load_npy(path, *, comm=None, rank: int | None = None,
             size: int | None = None) -> np.ndarray:
    """Memory-map an ``.npy`` file, read-only: the whole array, or one shard of its rows.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``numpy.save`` (C order; no object arrays).
    comm : mpi4py.MPI.Intracomm, optional
        Map only this rank's rows (:func:`shard_bounds` with the
        communicator's rank and size).
    rank, size : int, optional
        The same without a communicator (both or neither).

    Returns
    -------
    numpy.memmap
        Read-only.  Only the shard's part of the file is mapped, and only
        the pages whose rows are touched are read.
    """
    if comm is not None:
        if rank is not None or size is not None:
            raise ValueError("give comm, or rank and size, not both")
        from tinycore.distributed import _communicator
        wrapped = _communicator(comm)
        rank, size = wrapped.rank, wrapped.size
    elif (rank is None) != (size is None):
        raise ValueError("give both rank and size, or neither")
    path = os.fspath(path)
    with open(path, "rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        except ValueError as exc:
            raise ValueError(f"{path} is not an .npy file: {exc}") from None
        offset = file.tell()
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects; only numeric arrays can be mapped")
    if fortran and len(shape) > 1:
        raise ValueError(f"{path} is in Fortran order; rows can only be mapped from C order "
                         "(save np.ascontiguousarray(array))")
    if len(shape) == 0:
        raise ValueError(f"{path} holds a scalar, not rows")
    start, stop = (0, shape[0]) if rank is None else shard_bounds(shape[0], rank, size)
    row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    rows = (stop - start,) + tuple(shape[1:])
    if rows[0] == 0 or row_bytes == 0:
        # mmap cannot map zero bytes: an empty shard is an empty array.
        return np.empty(rows, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset + start * row_bytes,
                     shape=rows, order="C")
