"""Which compiled set of kernels to run, from the CPU that runs them.

setup.py compiles the kernel modules (``_blas``, ``_activations``,
``_losses``, ``_dense``, ``_optim``, ``_plan``) once per instruction-set
level, from the same sources; the compiler vectorises their loops for each
level's vector width:

========  ====================  ==========================================
level     package               compiled for (the CPU must run it)
========  ====================  ==========================================
baseline  ``tinycore``          x86-64: every x86-64 CPU
avx2      ``tinycore._avx2``    x86-64-v3: AVX, AVX2, FMA, BMI2, F16C ...
avx512    ``tinycore._avx512``  x86-64-v4: the above and AVX-512 F BW CD DQ VL
========  ====================  ==========================================

At import, tinycore loads the widest set the CPU runs (its level asked of the
CPU by CPUID, tinycore._cpu.x86_64_level); the others are never imported, so
a CPU never meets an instruction it lacks.  ``TINYCORE_SIMD``
(``auto``, ``baseline``, ``avx2`` or ``avx512``), read once at import, asks
for a level: ``baseline`` is how to compare with, or work around, the wider
sets.  A level the CPU cannot run is refused with a warning, and the widest
level it can run below it is used.  The AVX2 and AVX-512 sets give
bit-identical results, and the baseline the same up to rounding: its small
matrix products round each product, where the others fuse multiply and add
(tests/test_simd.py); otherwise the choice changes speed only.

A build with ``TINYCORE_NATIVE=1``, or off x86-64, has one set only (in
``tinycore``), compiled for what its build asked for.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from types import ModuleType

from tinycore import _cpu

#: Levels, narrowest first.
LEVELS = ("baseline", "avx2", "avx512")

#: The package holding each level's kernel modules.
PACKAGES = {"baseline": "tinycore", "avx2": "tinycore._avx2", "avx512": "tinycore._avx512"}

#: The x86-64 level each set was compiled for: the CPU must run it.
REQUIRED_LEVEL = {"baseline": 0, "avx2": 3, "avx512": 4}

#: The environment variable that asks for a level.
ENV = "TINYCORE_SIMD"


def built_levels() -> tuple[str, ...]:
    """The levels whose kernel modules are installed (baseline always is)."""
    built = ["baseline"]
    for level in LEVELS[1:]:
        if importlib.util.find_spec(f"{PACKAGES[level]}._plan") is not None:
            built.append(level)
    return tuple(built)


def runnable_levels(cpu_level, built) -> tuple[str, ...]:
    """The built levels a CPU of x86-64 level ``cpu_level`` runs, narrowest first."""
    return tuple(level for level in LEVELS
                 if level in built and REQUIRED_LEVEL[level] <= cpu_level)


def choose_level(cpu_level, environ, built) -> tuple[str, str]:
    """Return (level to load, the reason), never a level the CPU cannot run.

    Parameters
    ----------
    cpu_level : int
        The CPU's x86-64 level, 1 to 4 (0 off x86-64: only the baseline,
        then compiled for that architecture, runs).
    environ : mapping
        The environment; ``TINYCORE_SIMD`` asks for a level.
    built : sequence of str
        The levels installed (:func:`built_levels`).

    Raises
    ------
    ValueError
        If ``TINYCORE_SIMD`` names no level.
    """
    requested = environ.get(ENV, "auto").strip().lower() or "auto"
    if requested not in ("auto",) + LEVELS:
        raise ValueError(f"{ENV}={environ[ENV]!r}: expected one of auto, "
                         f"{', '.join(LEVELS)}")
    runnable = runnable_levels(cpu_level, built)
    if requested == "auto":
        best = runnable[-1]
        if best == "baseline" and len(built) == 1:
            return best, "one set of kernels built (TINYCORE_NATIVE=1, or not x86-64)"
        return best, f"the widest set this CPU runs (it is x86-64-v{cpu_level})"
    if requested in runnable:
        return requested, f"{ENV}={requested}"
    fallback = [level for level in runnable if LEVELS.index(level) < LEVELS.index(requested)]
    chosen = fallback[-1]
    if requested not in built:
        why = f"the {requested} set is not built here"
    else:
        why = (f"it needs x86-64-v{REQUIRED_LEVEL[requested]}, "
               f"this CPU is x86-64-v{cpu_level}")
    return chosen, f"{ENV}={requested} refused ({why}): {chosen} instead"


def _decide() -> dict:
    level, reason = choose_level(_cpu.x86_64_level(), os.environ, built_levels())
    if reason.startswith(f"{ENV}=") and "refused" in reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
    return {"level": level, "package": PACKAGES[level], "reason": reason}


#: The level in use for this process, decided once at import.
decision = _decide()


def load(name: str, level: str | None = None) -> ModuleType:
    """Import kernel module ``name`` (e.g. ``"_plan"``) of ``level`` (default: the one in use).

    Raises
    ------
    RuntimeError
        If ``level`` is one this CPU cannot run or that is not built: its
        modules are never imported.
    """
    level = decision["level"] if level is None else level
    runnable = runnable_levels(_cpu.x86_64_level(), built_levels())
    if level not in runnable:
        raise RuntimeError(f"the {level} kernels cannot run here (runnable: "
                           f"{', '.join(runnable)})")
    return importlib.import_module(f"{PACKAGES[level]}.{name}")
