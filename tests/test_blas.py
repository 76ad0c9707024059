"""The typed GEMM wrapper (tinycore._blas) against NumPy, over every flag combination.

The module tested is the SIMD set in use (tinycore._simd: TINYCORE_SIMD=baseline
tests the baseline's); tests/test_simd.py compares the sets with each other.
"""
import itertools
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import reference

import tinycore
from tinycore import _simd

_blas = _simd.load("_blas")

# float32 accumulates k products with a unit roundoff of 6e-8; float64 with 1e-16.
TOL = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-4),
       np.dtype("float64"): dict(rtol=1e-12, atol=1e-12)}

# (m, n, k) of C = op(A) @ op(B): 1x1, k = 1, vectors, non-square, sizes past
# the small blocking of optimised BLAS, odd sizes around the kernel's tiles
# (2 or 4 rows x 32 columns), the products of the benchmark networks, and
# sizes past the crossover, so that _gemm takes both its kernel and BLAS
# (test_shapes_cover_both_sides_of_the_crossover checks it for this build).
SHAPES = [(1, 1, 1), (3, 5, 4), (7, 2, 6), (1, 6, 3), (5, 1, 1), (33, 17, 65),
          (6, 6, 6), (17, 33, 7), (3, 65, 17), (65, 7, 33), (33, 31, 3),
          (32, 32, 64), (32, 10, 32), (64, 32, 32), (32, 32, 10), (64, 10, 32),
          (2, 96, 128), (100, 70, 129), (128, 128, 128)]
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


# --- the BLAS lock: one threaded BLAS product at a time ---------------------
#
# OpenBLAS (SciPy's 0.3.30) returns wrong products when two threads run different
# GEMM variants at once on its worker threads (see _blas.pyx), so _gemm holds
# a lock around a BLAS call while the library may use several threads.  The
# tests hold that lock themselves and watch whether a product waits for it.

# (m, n, k): past the crossover, and too few rows for tiles on one BLAS
# thread, so BLAS at any thread count.
BLAS_SHAPE = (4, 512, 1024)


def _start_products(dtype, rng):
    """Start one thread per transpose variant, each computing a BLAS product;
    return the threads and a function that checks their results."""
    m, n, k = BLAS_SHAPE
    jobs = []
    for trans_a, trans_b in [(False, False), (True, False), (False, True)]:
        assert not _blas._gemm_uses_kernel(dtype == np.float32, trans_a, trans_b, m, n, k)
        a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
        expected = _expected(trans_a, trans_b, 1.0, a, b, 0.0, c)
        thread = threading.Thread(target=_blas._gemm_memview,
                                  args=(trans_a, trans_b, 1.0, a, b, 0.0, c))
        thread.start()
        jobs.append((thread, c, expected))

    def check():
        for _, c, expected in jobs:
            np.testing.assert_allclose(c, expected, **TOL[dtype])
    return [thread for thread, _, _ in jobs], check


def test_threaded_blas_products_wait_for_the_blas_lock(dtype, rng, blas_threads):
    blas_threads(2)
    assert _blas._blas_calls_serialised()
    _blas._acquire_blas_lock()
    try:
        threads, check = _start_products(dtype, rng)
        for thread in threads:
            thread.join(timeout=0.5)
        assert all(thread.is_alive() for thread in threads), "a product did not wait"
    finally:
        _blas._release_blas_lock()
    for thread in threads:
        thread.join()
    check()


def test_on_one_blas_thread_products_do_not_wait(dtype, rng, blas_threads):
    blas_threads(1)
    if _blas._blas_calls_serialised():
        pytest.skip("this BLAS has no thread count tinycore can ask: always serialised")
    _blas._acquire_blas_lock()
    try:
        threads, check = _start_products(dtype, rng)
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a product waited"
    finally:
        _blas._release_blas_lock()
    check()


def test_blas_lock_is_free_in_a_forked_child_while_held():
    """A fork while another thread holds the lock: the child gets a free one."""
    _blas._acquire_blas_lock()
    try:
        pid = os.fork()
        if pid == 0:        # the child: a BLAS product must not wait forever
            code = 1
            try:
                a = np.ones((256, 256))         # float64: BLAS at any thread count
                c = np.empty((256, 256))
                _blas._gemm_memview(False, False, 1.0, a, a, 0.0, c)
                code = 0 if np.all(c == 256) else 2
            finally:
                os._exit(code)
    finally:
        _blas._release_blas_lock()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("a BLAS product in the forked child waited for the parent's lock")
    assert os.waitstatus_to_exitcode(status) == 0


# --- the small-product kernel ------------------------------------------------

KMAX = 256     # TC_GEMM_KMAX: the longest sum the kernel takes


def _in_order_reference(trans_a, trans_b, alpha, a, b, beta, c):
    """What this build's kernel computes (reference.in_order_product): each
    step fused where the kernel fuses (its instruction set has FMA)."""
    return reference.in_order_product(trans_a, trans_b, alpha, a, b, beta, c,
                                      fused=_blas._tile_fuses())


@pytest.mark.parametrize("shape", SHAPES[:-2] + [(40, 3, KMAX), (1, 33, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("alpha, beta", ALPHA_BETA)
@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_kernel_is_the_in_order_sum_bit_for_bit(dtype, rng, trans_a, trans_b, alpha,
                                                 beta, shape):
    m, n, k = shape
    a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
    expected = _in_order_reference(trans_a, trans_b, alpha, a, b, beta, c)
    exact = _expected(trans_a, trans_b, alpha, a, b, beta, c)
    if beta == 0.0:
        c[...] = np.nan     # never read when beta == 0
    _blas._small_gemm_memview(trans_a, trans_b, alpha, a, b, beta, c)
    np.testing.assert_array_equal(c, expected)
    np.testing.assert_allclose(c, exact, **TOL[dtype])


# Sums longer than one panel of B (KMAX steps) go on from the sums so far,
# kept in C between blocks of p: the same steps as one pass.  Shapes at the
# tiles' edges (7, 9, 33 rows; 3, 70 columns), one step past a panel, and
# T3's first layer (784 inputs, in blocks of 196).
LONG_SHAPES = [(9, 70, KMAX + 1), (7, 33, 600), (33, 3, 513), (64, 40, 784)]


@pytest.mark.parametrize("shape", LONG_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_kernel_takes_long_sums_in_blocks_bit_for_bit(dtype, rng, trans_a, trans_b, alpha,
                                                      shape):
    m, n, k = shape
    a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
    expected = _in_order_reference(trans_a, trans_b, alpha, a, b, 0.0, c)
    c[...] = np.nan
    _blas._small_gemm_memview(trans_a, trans_b, alpha, a, b, 0.0, c)
    np.testing.assert_array_equal(c, expected)
    np.testing.assert_allclose(c, _expected(trans_a, trans_b, alpha, a, b, 0.0, c), **TOL[dtype])


# Large products pack B a block of panels at a time, take C's rows in blocks
# and pack a transposed A into slivers: the same steps, so the same bits.
# 259 x 520 x 300 crosses a column block (384 float32 columns or 192
# float64 with A in place, 512 or 256 with A packed) into a partial panel,
# a row block (240) into a partial tile, and, with A packed, a panel of p
# (two blocks of 150).  48 x 192 x 4100 takes A in place in two blocks of p
# (2,050 each, a panel per column block) in whole tiles, the second going
# on from the first's sums in C; the narrow one (10 columns) is computed as
# C^T, through the tiles' sums, in three blocks of p or 22.
BLOCKED_SHAPES = [(259, 520, 300), (48, 192, 4100), (600, 10, 5600)]


@pytest.mark.parametrize("shape", BLOCKED_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_kernel_blocks_large_products_bit_for_bit(dtype, rng, trans_a, trans_b, shape):
    m, n, k = shape
    assert m * n * k >= _blas._blocked_work()
    assert KMAX < BLOCKED_SHAPES[0][2] < _blas._blocked_kc() < BLOCKED_SHAPES[1][2]
    a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
    expected = _in_order_reference(trans_a, trans_b, 0.5, a, b, 0.0, c)
    c[...] = np.nan
    _blas._small_gemm_memview(trans_a, trans_b, 0.5, a, b, 0.0, c)
    np.testing.assert_array_equal(c, expected)
    # The packing buffer is one per thread: another thread's is the same.
    from_thread = np.full_like(c, np.nan)
    _run_threaded(lambda: _blas._small_gemm_memview(trans_a, trans_b, 0.5, a, b, 0.0,
                                                    from_thread), n_jobs=1)
    np.testing.assert_array_equal(from_thread, expected)


# On one BLAS thread the float32 tiles take products past the crossover too
# (where they fuse their multiply-adds), for their exact bits; on two, BLAS.
ONE_THREAD_SHAPES = [(64, 256, 784), (784, 256, 64), (64, 128, 256), (8, 16, 300)]


@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_on_one_blas_thread_float32_products_take_the_tiles(dtype, rng, blas_threads,
                                                            trans_a, trans_b):
    float32 = dtype == np.float32
    tiles = float32 and _blas._tile_fuses()
    for m, n, k in ONE_THREAD_SHAPES:
        blas_threads(2)
        assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, m, n, k)
        blas_threads(1)
        assert _blas._gemm_uses_kernel(float32, trans_a, trans_b, m, n, k) == tiles
        # ... but not C's own values on top of more than one panel, nor
        # fewer rows than a tall tile.
        assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, m, n, KMAX + 1, 1.0)
        assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, 4, 1024, 600)
        a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
        c[...] = np.nan
        _blas._gemm_memview(trans_a, trans_b, 1.0, a, b, 0.0, c)
        if tiles:
            np.testing.assert_array_equal(
                c, _in_order_reference(trans_a, trans_b, 1.0, a, b, 0.0, c),
                err_msg=str((m, n, k)))
        np.testing.assert_allclose(c, _expected(trans_a, trans_b, 1.0, a, b, 0.0, c),
                                   **TOL[dtype])


def test_on_one_blas_thread_the_bias_is_added_as_the_tiles_are_stored(dtype, rng,
                                                                      blas_threads):
    blas_threads(1)
    m, n, k = 64, 256, 784
    a, b, _ = _operands(rng, dtype, m, n, k, False, False)
    bias = rng.standard_normal(n).astype(dtype)
    product = np.full((m, n), np.nan, dtype)
    _blas._gemm_memview(False, False, 1.0, a, b, 0.0, product)
    c = np.full((m, n), np.nan, dtype)
    _blas._gemm_bias_memview(a, b, bias, c)
    np.testing.assert_array_equal(c, product + bias)


@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_gemm_takes_the_kernel_bit_for_bit(dtype, rng, trans_a, trans_b):
    # Wherever _gemm takes the kernel, it gives the kernel's exact bits.
    float32 = dtype == np.float32
    used = [s for s in SHAPES if _blas._gemm_uses_kernel(float32, trans_a, trans_b, *s)]
    assert used, "no shape of SHAPES takes the kernel"
    for m, n, k in used:
        a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
        c[...] = np.nan
        _blas._gemm_memview(trans_a, trans_b, 1.0, a, b, 0.0, c)
        np.testing.assert_array_equal(
            c, _in_order_reference(trans_a, trans_b, 1.0, a, b, 0.0, c), err_msg=str((m, n, k)))


@pytest.mark.parametrize("with_bias", [True, False])
def test_gemm_bias_is_the_product_then_the_bias_bit_for_bit(dtype, rng, with_bias):
    # The dense layers' Z = X W + b.  Where the kernel takes the product the
    # bias is added as the tiles are stored, elsewhere in a pass after BLAS:
    # either way each element is the rounded product plus the bias, rounded.
    float32 = dtype == np.float32
    takes_kernel = [_blas._gemm_uses_kernel(float32, False, False, *s) for s in SHAPES]
    assert any(takes_kernel) and not all(takes_kernel)
    for m, n, k in SHAPES:
        a, b, _ = _operands(rng, dtype, m, n, k, False, False)
        bias = rng.standard_normal(n).astype(dtype) if with_bias else None
        product = np.full((m, n), np.nan, dtype)
        _blas._gemm_memview(False, False, 1.0, a, b, 0.0, product)
        expected = product + bias if with_bias else product
        c = np.full((m, n), np.nan, dtype)
        _blas._gemm_bias_memview(a, b, bias, c)
        np.testing.assert_array_equal(c, expected, err_msg=str((m, n, k)))


@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_shapes_cover_both_sides_of_the_crossover(dtype, trans_a, trans_b):
    float32 = dtype == np.float32
    sides = {_blas._gemm_uses_kernel(float32, trans_a, trans_b, *s) for s in SHAPES}
    assert sides == {True, False}, f"SIMD level {_blas._simd_level()}"


def test_crossover_sends_what_the_kernel_cannot_take_to_blas(blas_threads):
    blas_threads(2)     # (on one BLAS thread, float32 tiles take more: see below)
    for float32 in (True, False):
        for trans_a, trans_b in itertools.product([False, True], repeat=2):
            assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, 4, 4, 0)
            assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, 1, 1, KMAX + 1)
            assert not _blas._gemm_uses_kernel(float32, trans_a, trans_b, 1024, 1024, 64)
            # A product of a few multiply-adds is not worth a BLAS call.
            assert _blas._gemm_uses_kernel(float32, trans_a, trans_b, 2, 3, 4)


@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product([False, True], repeat=2)))
def test_kernel_with_padded_rows(dtype, rng, trans_a, trans_b):
    # Views of wider arrays: each leading dimension exceeds the row length,
    # and the padding (NaN) must be neither read nor written.
    m, n, k = 37, 45, 19
    a, b, c = _operands(rng, dtype, m, n, k, trans_a, trans_b)
    expected = _in_order_reference(trans_a, trans_b, 0.5, a, b, 2.0, c)
    wide = [np.full((x.shape[0], x.shape[1] + 5), np.nan, dtype) for x in (a, b, c)]
    for w, x in zip(wide, (a, b, c)):
        w[:, :x.shape[1]] = x
    a_view, b_view, c_view = (w[:, :x.shape[1]] for w, x in zip(wide, (a, b, c)))
    _blas._small_gemm_memview(trans_a, trans_b, 0.5, a_view, b_view, 2.0, c_view)
    np.testing.assert_array_equal(c_view, expected)
    assert np.isnan(wide[2][:, n:]).all()
    np.testing.assert_array_equal(wide[0][:, :a.shape[1]], a)
    np.testing.assert_array_equal(wide[1][:, :b.shape[1]], b)


def test_kernel_rejects_what_it_cannot_take():
    a = np.ones((4, KMAX + 1))
    # Past one panel the sums so far wait in C, so C's own values cannot be
    # added to them.
    with pytest.raises(ValueError, match="beta = 0 past"):
        _blas._small_gemm_memview(False, False, 1.0, a, np.ones((KMAX + 1, 4)), 1.0,
                                  np.ones((4, 4)))
    with pytest.raises(ValueError, match="k >= 1"):
        _blas._small_gemm_memview(False, False, 1.0, np.ones((4, 0)), np.ones((0, 4)), 0.0,
                                  np.ones((4, 4)))
    with pytest.raises(ValueError, match="contiguous"):
        _blas._small_gemm_memview(False, False, 1.0, np.ones((4, 6))[:, ::2],
                                  np.ones((3, 4)), 0.0, np.ones((4, 4)))


def test_kernel_propagates_nan_and_inf_like_the_in_order_sum(dtype):
    # Special values in A or B reach exactly the elements they should; the
    # rows and columns a tile only pads with are never stored.
    a = np.arange(1.0, 1.0 + 5 * 3).reshape(5, 3).astype(dtype)
    b = np.arange(1.0, 1.0 + 3 * 7).reshape(3, 7).astype(dtype)
    a[1, 2] = np.nan
    b[0, 4] = np.inf
    c = np.empty((5, 7), dtype)
    _blas._small_gemm_memview(False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_array_equal(
        c, _in_order_reference(False, False, 1.0, a, b, 0.0, c))
    assert np.isnan(c[1]).all() and np.isinf(c[[0, 2, 3, 4], 4]).all()


@pytest.mark.parametrize("n_rows, n_cols", [(1, 1), (64, 32), (7, 15), (5, 16), (3, 17), (33, 50),
                                            (9, 512), (6, 2048), (5, 4100)])
def test_column_sums_are_the_in_order_sums_bit_for_bit(dtype, rng, n_rows, n_cols):
    # The bias gradient: each column summed from +0 over the rows in order,
    # in the array's dtype, whatever the block of 16 columns it falls in (a
    # narrow x) or the block of 2,048 (a wide one, from 512 columns).
    x = rng.standard_normal((n_rows, n_cols)).astype(dtype)
    x[:, -1] = -0.0                 # from +0: a sum of -0's is +0
    expected = np.zeros(n_cols, dtype)
    for row in x:
        expected = expected + row
    out = np.full(n_cols, np.nan, dtype)
    _blas._column_sums_memview(x, out)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out[-1])
    np.testing.assert_allclose(out, x.sum(axis=0, dtype=np.float64), **TOL[dtype])
