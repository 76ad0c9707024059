"""Shared set-up of the benchmark suite: threads, seeded data, machine info.

Everything here runs outside the timed calls.  The machine description and
the command line go into the ``--benchmark-json`` file (``machine_info`` ->
``tinycore_bench``), so that ``report.py`` describes the machine the numbers
were measured on, not the one the report is written on.
"""
from __future__ import annotations

import io
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

# numpy_mlp.py sits beside this file; --import-mode=importlib leaves the
# directory off sys.path, so put it there (it holds no package that could
# shadow the installed tinycore).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

#: Seed of every weight initialisation and data set in the suite.
SEED = 0

#: The CPUs this process could run on when the suite started.
USABLE_CPUS = sorted(os.sched_getaffinity(0))

#: Threads for every engine; the machine's cores unless TINYCORE_BENCH_THREADS says.
N_THREADS = int(os.environ.get("TINYCORE_BENCH_THREADS") or 0) or len(USABLE_CPUS)


def _pin(cpus: list) -> None:
    """Restrict this process to ``cpus``: every thread it has and all it starts."""
    try:
        threads = [int(task) for task in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]                  # this thread only (new ones inherit it)
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cpus)
        except OSError:
            pass                       # a thread that has ended since the listing


# XLA's CPU client ignores the thread flags below and runs a jit-compiled
# matmul on every core the process may use (measured with JAX 0.10 under
# them: 1.94 s of CPU per second of wall time on 2 cores), which made JAX's
# "one thread" numbers two-core ones.  With fewer threads than cores, the
# process is therefore pinned to N_THREADS cores, the same for every engine.
PINNED_CPUS = USABLE_CPUS[:N_THREADS]
if len(PINNED_CPUS) < len(USABLE_CPUS):
    _pin(PINNED_CPUS)

# The variables that change what is measured, as the user set them (before
# the XLA default below), to be shown in front of the recorded command.
_USER_ENV = {name: os.environ[name] for name in
             ("TINYCORE_BENCH_THREADS", "TINYCORE_SIMD", "PYTHONPATH", "XLA_FLAGS",
              "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
              "OPENBLAS_L2_SIZE")
             if name in os.environ}

# XLA takes its thread pool from flags read when JAX starts (the builders
# import it later): for a one-thread run, keep JAX to one thread as well.
# A user's own XLA_FLAGS win.
if N_THREADS == 1 and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                               "intra_op_parallelism_threads=1")

# pyproject turns every warning into an error.  Warnings that the peers emit
# on their own, which say nothing about the code measured here, are ignored
# by exact message only (none is known today with torch 2.13 / jax 0.10;
# add one line here per warning, never a blanket category).
_PEER_WARNINGS = [
    # "ignore:<message regex>:<Category>:<module regex>",
]


def pytest_configure(config):
    for line in _PEER_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session", autouse=True)
def n_threads():
    """Limit every BLAS in the process (NumPy's and the one tinycore calls
    through SciPy) to N_THREADS; PyTorch is set to the same in its builder.
    JAX/XLA sizes its own thread pool from the cores at import."""
    from threadpoolctl import threadpool_limits

    import tinycore as tc

    tc.set_num_threads(N_THREADS)
    limiter = threadpool_limits(limits=N_THREADS, user_api="blas")
    yield N_THREADS
    limiter.restore_original_limits()


@pytest.fixture(scope="session")
def seed():
    """The seed of every weight initialisation and data set."""
    return SEED


# -- machine description for the JSON file ------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command(config) -> str:
    program = Path(sys.argv[0]).name if sys.argv else "pytest"
    if program == "__main__.py":
        program = "python -m pytest"
    env = [f"{name}={shlex.quote(value)}" for name, value in _USER_ENV.items()]
    return " ".join(env + [program] + [shlex.quote(a) for a in config.invocation_params.args])


def pytest_benchmark_update_machine_info(config, machine_info):
    from threadpoolctl import threadpool_info

    import tinycore as tc

    shown = tc.show_config(file=io.StringIO())
    blas = shown["blas"]                   # the BLAS tinycore calls
    numpy_blas = [
        {key: pool.get(key) for key in ("internal_api", "version", "architecture",
                                         "num_threads", "filepath")}
        for pool in threadpool_info()
        if pool.get("user_api") == "blas" and "numpy" in str(pool.get("filepath", ""))
    ]
    machine_info["tinycore_bench"] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(USABLE_CPUS),
        "pinned_cpus": PINNED_CPUS if len(PINNED_CPUS) < len(USABLE_CPUS) else None,
        "threads": N_THREADS,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "seed": SEED,
        "command": _command(config),
        "cwd": os.getcwd(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": _version("scipy"),
            "torch": _version("torch"),
            "jax": _version("jax"),
            "jaxlib": _version("jaxlib"),
            "tinycore": tc.__version__,
            "pytest-benchmark": _version("pytest-benchmark"),
            "threadpoolctl": _version("threadpoolctl"),
        },
        "tinycore_file": tc.__file__,
        "tinycore_blas": blas,
        # The set of compiled kernels that ran (level, package, vector ISA,
        # why): compare_builds.py checks it, as TINYCORE_SIMD may be refused.
        "simd": shown["simd"],
        "numpy_blas": numpy_blas,
    }
