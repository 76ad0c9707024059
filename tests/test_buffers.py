"""Buffers on cache lines: the helper and the model buffers made with it."""
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinycore as tc
from tinycore._buffers import CACHE_LINE, aligned_empty, aligned_zeros


@given(size=st.integers(1, 5000), dtype=st.sampled_from(["float32", "float64", "uint8", "int64"]))
def test_aligned_empty_starts_a_cache_line(size, dtype):
    out = aligned_empty(size, dtype)
    assert out.ctypes.data % CACHE_LINE == 0
    assert out.shape == (size,)
    assert out.dtype == np.dtype(dtype)
    assert out.flags.c_contiguous and out.flags.writeable


def test_aligned_empty_of_no_elements():
    out = aligned_empty(0, "float32")
    assert out.shape == (0,) and out.dtype == np.float32


def test_aligned_zeros_is_zero():
    out = aligned_zeros(777, "float64")
    assert out.ctypes.data % CACHE_LINE == 0
    assert np.all(out == 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [(3, 5, 2), (32, 32, 10), (7, 1)])
def test_model_buffers_start_cache_lines(dtype, sizes):
    # A split step's threads write halves that end at multiples of 64 bytes
    # from the start of these buffers.
    layers = [tc.Dense(i, o) for i, o in zip(sizes, sizes[1:])]
    model = tc.Sequential(layers, dtype=dtype, seed=0)
    assert model.param_buffer.ctypes.data % CACHE_LINE == 0
    assert model.grad_buffer.ctypes.data % CACHE_LINE == 0
    assert np.all(model.grad_buffer == 0.0)
    # The layers still view the buffers.
    assert np.shares_memory(model.layers[0].W, model.param_buffer)


def _resident_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_aligned_zeros_takes_no_memory_until_written():
    # The allocator's zeros: a large buffer's pages stay unmapped until first
    # written, so a model's gradients cost nothing before its first step.
    before = _resident_bytes()
    out = aligned_zeros(64 << 20, "float32")       # 256 MB
    grown = _resident_bytes() - before
    assert grown < 16 << 20
    out[:1024] = 1.0
    assert out[1023] == 1.0 and out[-1] == 0.0
