"""Flat buffers that start on a cache line.

NumPy's allocator guarantees 16 bytes: its buffers of a few kilobytes and up
start 16 or 48 bytes into a 64-byte line.  Two things then go wrong.  Every
64-byte AVX-512 load or store of the buffer spans two lines.  And a split
training step (``_plan``) runs the two halves of the batch on two threads,
each writing its own rows of the workspace and its own half of the
parameters: the halves end at multiples of 64 bytes from the start of each
buffer, which keeps the threads off each other's lines only if the buffer
starts on one.  The model's parameters and gradients and the plan's
workspaces are made here (on a 2-core Xeon, T5 took about 5% less time on
one thread and on two).
"""
from __future__ import annotations

import numpy as np

#: Bytes in a cache line of the x86-64 and ARM CPUs tinycore is built for.
CACHE_LINE = 64


def aligned_empty(size: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array whose first element starts a cache line.

    Parameters
    ----------
    size : int
        Number of elements (>= 0; with none there is no first element, and
        the address may be anything).
    dtype : numpy dtype or str

    Returns
    -------
    numpy.ndarray
        C-contiguous and writeable, ``size`` elements of ``dtype``, at an
        address that is a multiple of :data:`CACHE_LINE`.  It is a view of a
        slightly larger byte buffer, which it keeps alive.
    """
    return _aligned(np.empty, size, dtype)


def aligned_zeros(size: int, dtype) -> np.ndarray:
    """:func:`aligned_empty`, filled with zeros.

    The zeros come from the allocator (``np.zeros``), as the pages of a large
    buffer come from the system: they take no memory until first written.
    (Filling an empty buffer instead made the T4 model's 24 MB of gradients
    resident while its weights were drawn, and fit's peak 18 MB higher.)
    """
    return _aligned(np.zeros, size, dtype)


def _aligned(allocate, size: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n_bytes = size * dtype.itemsize
    raw = allocate(n_bytes + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + n_bytes].view(dtype)
