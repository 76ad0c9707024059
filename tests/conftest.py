"""Shared fixtures: a seeded random generator and the two float dtypes."""
import os
import pathlib
import warnings

import numpy as np
import pytest

import tinycore

CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--seed-sweep", type=int, default=0,
                     help="run the seeded tests with this many extra seeds")


def pytest_configure(config):
    # In CI the suite must test the installed wheel, not the source tree
    # (which has no compiled modules and would mask a packaging mistake).
    if os.environ.get("CI"):
        installed = pathlib.Path(tinycore.__file__).resolve()
        assert CHECKOUT not in installed.parents, (
            f"tests imported tinycore from the checkout ({installed}); "
            "install it and run pytest with --import-mode=importlib"
        )


def pytest_generate_tests(metafunc):
    if "seed" in metafunc.fixturenames:
        extra = metafunc.config.getoption("--seed-sweep")
        metafunc.parametrize("seed", [0] + list(range(1, extra + 1)))


@pytest.fixture
def rng(seed):
    """A NumPy generator, deterministic (seed 0) unless --seed-sweep asks for more."""
    return np.random.default_rng(seed)


@pytest.fixture
def blas_threads():
    """``tc.set_num_threads`` for a test, without its warning about more threads
    than CPUs; the original BLAS thread count is put back after."""
    def set_threads(n):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".* BLAS threads on", RuntimeWarning)
            tinycore.set_num_threads(n)

    pools = tinycore._config.blas_info()
    original = pools[0]["num_threads"] if pools else 1
    yield set_threads
    set_threads(original)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Each of tinycore's two precisions."""
    return np.dtype(request.param)


#: Tolerances for comparing tinycore with a float64 NumPy reference.
TOLERANCE = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-5),
             np.dtype("float64"): dict(rtol=1e-10, atol=1e-12)}
