"""Which BLAS kernels to ask for, from what the CPU reports.

SciPy's OpenBLAS picks its kernels when it is loaded.  On some CPUs with
AVX-512 (AMD Zen 4 among them) its detection falls back to the AVX2
("Haswell") kernels, which leave half the vector width unused.  Before SciPy
loads it, tinycore sets ``OPENBLAS_CORETYPE=SkylakeX`` when, and only when,
the operating system reports every AVX-512 subset those kernels use, so a CPU
without them never gets them (they would stop the process with SIGILL).

This module imports nothing that loads a BLAS.
"""
from __future__ import annotations

import os
import sys

#: AVX-512 subsets used by OpenBLAS's SkylakeX kernels.
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})

#: What tinycore decided at import, for show_config().
decision = {"coretype": None, "reason": "not decided yet"}


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the Linux kernel reports (empty elsewhere)."""
    try:
        with open(path, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def choose_coretype(flags, environ, blas_loaded: bool) -> tuple[str | None, str]:
    """Return (OPENBLAS_CORETYPE to set or None, the reason), deciding nothing unsafe.

    Parameters
    ----------
    flags : set of str
        CPU flags as /proc/cpuinfo lists them.
    environ : mapping
        The environment; a user's OPENBLAS_CORETYPE is never overridden, and
        ``TINYCORE_BLAS_CORETYPE=off`` turns the choice off.
    blas_loaded : bool
        Whether SciPy's BLAS is already loaded (then it is too late).
    """
    if environ.get("TINYCORE_BLAS_CORETYPE", "auto").lower() == "off":
        return None, "TINYCORE_BLAS_CORETYPE=off: OpenBLAS chooses its own kernels"
    if environ.get("OPENBLAS_CORETYPE"):
        return None, f"OPENBLAS_CORETYPE={environ['OPENBLAS_CORETYPE']} set by the user"
    if not SKYLAKEX_FLAGS <= set(flags):
        return None, "no AVX-512 on this CPU: OpenBLAS chooses its own kernels"
    if blas_loaded:
        return None, ("AVX-512 present, but SciPy's BLAS was loaded before tinycore: "
                      "set OPENBLAS_CORETYPE=SkylakeX before starting Python")
    return "SkylakeX", "AVX-512 present: OpenBLAS asked for its SkylakeX kernels"


def select_blas_kernels() -> None:
    """Apply :func:`choose_coretype` to this process (called once, at import)."""
    blas_loaded = "scipy.linalg.cython_blas" in sys.modules or "scipy.linalg" in sys.modules
    coretype, reason = choose_coretype(cpu_flags(), os.environ, blas_loaded)
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    decision.update(coretype=coretype, reason=reason)
