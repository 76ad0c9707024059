"""What the CPU runs: its x86-64 level, and the BLAS kernels to ask for.

The level (CPUID, through ``tinycore._cpuid``) decides which compiled set of
tinycore's kernels is loaded (``tinycore._simd``) and whether SciPy's
OpenBLAS may use its AVX-512 kernels.

SciPy's OpenBLAS picks its kernels when it is loaded.  On some CPUs with
AVX-512 (AMD Zen 4 among them) its detection falls back to the AVX2
("Haswell") kernels, which leave half the vector width unused.  Before SciPy
loads it, tinycore sets ``OPENBLAS_CORETYPE=SkylakeX`` when, and only when,
the CPU runs x86-64-v4 (every AVX-512 subset those kernels use), so a CPU
without them never gets them (they would stop the process with SIGILL).

This module imports nothing that loads a BLAS.
"""
from __future__ import annotations

import functools
import os
import sys

#: CPU flags (as the Linux kernel names them) of each x86-64 level beyond the
#: first; only used where CPUID cannot be asked.  abm is LZCNT.
LEVEL_FLAGS = {
    2: frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    3: frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    4: frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}

#: OpenBLAS core types (lower case) whose kernels use AVX-512.
AVX512_CORETYPES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})

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


def level_from_flags(flags) -> int:
    """The x86-64 level that a /proc/cpuinfo flag set reports (1 if none known)."""
    level = 1
    for candidate in (2, 3, 4):
        if not LEVEL_FLAGS[candidate] <= set(flags):
            break
        level = candidate
    return level


@functools.cache
def x86_64_level() -> int:
    """The x86-64 level (1-4) of the CPU running this process; 0 off x86-64.

    Asked of the CPU itself (CPUID); /proc/cpuinfo only where this build
    cannot ask, as it may describe another CPU (the host's, under an emulator).
    """
    from tinycore import _cpuid

    level = _cpuid.x86_64_level()
    if level > 0:
        return level
    flags = cpu_flags()
    return level_from_flags(flags) if "sse2" in flags else 0


def choose_coretype(level: int, environ, blas_loaded: bool) -> tuple[str | None, str]:
    """Return (OPENBLAS_CORETYPE to set or None, the reason), deciding nothing unsafe.

    Parameters
    ----------
    level : int
        The CPU's x86-64 level (:func:`x86_64_level`); AVX-512 is level 4.
    environ : mapping
        The environment; a user's OPENBLAS_CORETYPE is never overridden, and
        ``TINYCORE_BLAS_CORETYPE=off`` turns the choice off.
    blas_loaded : bool
        Whether SciPy's BLAS is already loaded (then it is too late).
    """
    if environ.get("TINYCORE_BLAS_CORETYPE", "auto").lower() == "off":
        return None, "TINYCORE_BLAS_CORETYPE=off: OpenBLAS chooses its own kernels"
    user_choice = environ.get("OPENBLAS_CORETYPE")
    if user_choice:
        reason = f"OPENBLAS_CORETYPE={user_choice} set by the user"
        if level >= 4 and user_choice.lower() not in AVX512_CORETYPES:
            # Some machines set it for old OpenBLAS builds; say what it costs.
            reason += (" (this CPU runs AVX-512: unset it, and OPENBLAS_L2_SIZE with it,"
                       " for the SkylakeX kernels)")
        return None, reason
    if level < 4:
        return None, "no AVX-512 on this CPU: OpenBLAS chooses its own kernels"
    if blas_loaded:
        return None, ("AVX-512 present, but SciPy's BLAS was loaded before tinycore: "
                      "set OPENBLAS_CORETYPE=SkylakeX before starting Python")
    return "SkylakeX", "AVX-512 present: OpenBLAS asked for its SkylakeX kernels"


def select_blas_kernels() -> None:
    """Apply :func:`choose_coretype` to this process (called once, at import)."""
    blas_loaded = "scipy.linalg.cython_blas" in sys.modules or "scipy.linalg" in sys.modules
    coretype, reason = choose_coretype(x86_64_level(), os.environ, blas_loaded)
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    decision.update(coretype=coretype, reason=reason)
