"""Run-time configuration: the BLAS in use and its threads."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import scipy
from threadpoolctl import threadpool_info, threadpool_limits

from tinycore import _cpu, _simd
from tinycore._validation import check_positive_int

__all__ = ["show_config", "set_num_threads", "blas_info"]

# The limiter must stay referenced: threadpoolctl undoes a limit that is
# garbage-collected.
_thread_limit = None


def _scipy_blas_pools() -> list[dict]:
    # tinycore's kernels call the BLAS that SciPy's cython_blas is linked to
    # (NumPy may carry a second one, which tinycore never calls).
    # Wheels keep it in scipy.libs/ beside the package; elsewhere (a system
    # or conda BLAS) every BLAS loaded is listed.
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
    ours = [pool for pool in pools
            if os.path.realpath(pool.get("filepath") or "").startswith(scipy_dir)]
    return ours or pools


def blas_info() -> list[dict]:
    """threadpoolctl's description of the BLAS library tinycore's kernels call."""
    return _scipy_blas_pools()


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Use at most ``n`` threads in BLAS calls from now on (threadpoolctl).

    Parameters
    ----------
    n : int
        Number of threads, >= 1.  More than the CPUs this process may run on
        is allowed, with a RuntimeWarning: OpenBLAS's threads then wait for
        each other on the shared cores (a 784-256-128-10 step on 2 CPUs:
        0.89 ms with 2 threads, 68 ms with 3).

    Warns
    -----
    RuntimeWarning
        If ``n`` exceeds :func:`available_cpus`.
    """
    global _thread_limit
    n = check_positive_int(n, "n")
    cpus = available_cpus()
    if n > cpus:
        warnings.warn(f"{n} BLAS threads on {cpus} available CPUs: OpenBLAS's threads "
                      "will wait for each other, and large products can run tens of "
                      f"times slower than on {cpus}", RuntimeWarning, stacklevel=2)
    _scipy_blas_pools()
    _thread_limit = threadpool_limits(limits=n, user_api="blas")


def show_config(file=None) -> dict:
    """Print (and return) the versions, the BLAS in use and its threads, and the loops' SIMD path.

    ``config["simd"]["level"]`` is the set of compiled kernels in use
    (``baseline``, ``avx2`` or ``avx512``, see ``TINYCORE_SIMD`` in the README).
    """
    from tinycore import __version__

    config = {
        "tinycore": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": [
            {key: pool.get(key) for key in
             ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for pool in blas_info()
        ],
        "blas_kernel_choice": _cpu.decision["reason"],
        "simd": {
            "level": _simd.decision["level"],
            "package": _simd.decision["package"],
            "vector_isa": _simd.load("_activations").VECTOR_ISA,
            "reason": _simd.decision["reason"],
        },
    }
    out = sys.stdout if file is None else file
    print(f"tinycore {config['tinycore']} (python {config['python']}, "
          f"numpy {config['numpy']}, scipy {config['scipy']})", file=out)
    for pool in config["blas"]:
        print(f"  BLAS: {pool['internal_api']} {pool['version']}, kernels "
              f"{pool['architecture']}, {pool['num_threads']} threads "
              f"({pool['filepath']})", file=out)
    print(f"  kernel choice: {config['blas_kernel_choice']}", file=out)
    simd = config["simd"]
    print(f"  tinycore loops: {simd['level']} ({simd['package']}, {simd['vector_isa']}): "
          f"{simd['reason']}", file=out)
    return config
