"""The typed GEMM wrapper (tinycore._blas) against NumPy, over every flag combination."""
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tinycore
from tinycore import _blas

# float32 accumulates k products with a unit roundoff of 6e-8; float64 with 1e-16.
TOL = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-4),
       np.dtype("float64"): dict(rtol=1e-12, atol=1e-12)}

# (m, n, k) of C = op(A) @ op(B): 1x1, k = 1, vectors, non-square, and sizes past
# the small blocking of optimised BLAS.
SHAPES = [(1, 1, 1), (3, 5, 4), (7, 2, 6), (1, 6, 3), (5, 1, 1), (33, 17, 65)]
ALPHA_BETA = [(1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (-2.0, 0.3)]


def _operands(rng, dtype, m, n, k, trans_a, trans_b):
    """A, B stored so that op(A) is (m, k) and op(B) is (k, n); all C-contiguous."""
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def _expected(trans_a, trans_b, alpha, a, b, beta, c):
    """alpha * op(a) @ op(b) + beta * c, in float64 from the stored values."""
    op_a = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    op_b = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    return alpha * (op_a @ op_b) + beta * c.astype(np.float64)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("alpha, beta", ALPHA_BETA)
@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_gemm_matches_numpy(dtype, rng, trans_a, trans_b, alpha, beta, shape):
    m, n, k = shape
    a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
    expected = _expected(trans_a, trans_b, alpha, a, b, beta, c)
    a_before, b_before = a.copy(), b.copy()
    if beta == 0.0:
        # With beta == 0 BLAS overwrites C without reading it: garbage (even
        # NaN) in C must not reach the result.
        c[...] = np.nan
    _blas._gemm_memview(trans_a, trans_b, alpha, a, b, beta, c)
    assert c.dtype == dtype
    np.testing.assert_allclose(c, expected, **TOL[dtype])
    # The inputs are const: GEMM must not write them.
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


def test_gemm_hand_worked_example():
    # [[1, 2],     [[5, 6],     [[1*5 + 2*7, 1*6 + 2*8],     [[19, 22],
    #  [3, 4]]  @   [7, 8]]  =   [3*5 + 4*7, 3*6 + 4*8]]  =   [43, 50]]
    # then 0.5 * that + 2 * ones = [[11.5, 13], [23.5, 27]].
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[5.0, 6.0], [7.0, 8.0]])
    c = np.ones((2, 2))
    _blas._gemm_memview(False, False, 0.5, a, b, 2.0, c)
    np.testing.assert_array_equal(c, [[11.5, 13.0], [23.5, 27.0]])


def test_gemm_transposes_are_not_swapped():
    # A non-square A (2x3) and B (3x1) with trans flags exercising the operand
    # swap of the row-major derivation: op(A) = A^T must be (3x2) @ ... etc.
    a = np.arange(6.0).reshape(3, 2)          # a^T = [[0, 2, 4], [1, 3, 5]]
    b = np.array([[1.0, 10.0, 100.0]])        # b^T = [[1], [10], [100]]
    c = np.zeros((2, 1))
    _blas._gemm_memview(True, True, 1.0, a, b, 0.0, c)
    # [0 + 20 + 400, 1 + 30 + 500] = [420, 531]
    np.testing.assert_array_equal(c, [[420.0], [531.0]])


def test_gemm_rejects_mixed_dtypes_and_fortran_order():
    a = np.ones((2, 2))
    with pytest.raises((TypeError, ValueError)):
        _blas._gemm_memview(False, False, 1.0, a, a, 0.0, np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        _blas._gemm_memview(False, False, 1.0, np.asfortranarray(np.ones((2, 3))),
                            np.ones((3, 2)), 0.0, np.ones((2, 2)))


# --- threads: shared inputs, one output each --------------------------------

N_THREADS = 8
REPEATS = 20


def _run_threaded(fn, n_jobs=N_THREADS):
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        return list(pool.map(lambda _: fn(), range(n_jobs)))


def test_gemm_from_threads_matches_single_thread(dtype, rng):
    a = rng.standard_normal((40, 30)).astype(dtype)
    b = rng.standard_normal((30, 20)).astype(dtype)
    single = np.empty((40, 20), dtype)
    _blas._gemm_memview(False, False, 1.0, a, b, 0.0, single)

    def job():
        results = []
        for _ in range(REPEATS):
            c = np.empty((40, 20), dtype)
            _blas._gemm_memview(False, False, 1.0, a, b, 0.0, c)
            results.append(c)
        return results

    for results in _run_threaded(job):
        for c in results:
            np.testing.assert_allclose(c, single, **TOL[dtype])


def test_sigmoid_from_threads_is_identical(dtype, rng):
    z = (rng.standard_normal((200, 50)) * 5).astype(dtype)
    single = tinycore.activations.sigmoid(z)

    def job():
        return [tinycore.activations.sigmoid(z) for _ in range(REPEATS)]

    for results in _run_threaded(job):
        for out in results:
            # Elementwise and deterministic: bit-for-bit the same.
            np.testing.assert_array_equal(out, single)
