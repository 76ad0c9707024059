"""Build script for tinycore's Cython kernels.

Metadata lives in pyproject.toml; this file only lists the extensions and the
compiler flags.  Environment switches:

TINYCORE_DEBUG_CYTHON=1
    Turn Cython's bounds, wraparound and initialisation checks back on.
TINYCORE_SANITIZE=address,undefined
    Compile and link with -fsanitize=... (GCC/Clang) for sanitizer runs.
TINYCORE_NATIVE=1
    Add -march=native (GCC/Clang): the loops may then use every instruction
    this machine's CPU has (AVX2, AVX-512, ...).  Only for a build that stays
    on the machine it was made on: the extensions would stop with "illegal
    instruction" on an older CPU, so never set it when building wheels to
    share.  The other flags stay: -ffp-contract=off still forbids FMA
    fusion, so the rounding is the same as in a portable build.  Without it,
    the compiler targets its default baseline: plain x86-64 (SSE2), which
    every x86-64 CPU runs, for GCC and Clang on Debian and Ubuntu (some
    distributions' compilers default higher, e.g. x86-64-v2 on RHEL 9);
    tests/test_packaging.py checks what the installed extensions use.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_blas", "_activations", "_losses", "_dense", "_optim", "_plan"]

# -O3 for the loops; never -ffast-math: it lets the compiler assume no NaN or
# infinity exists, which breaks the NaN handling and the stable formulas.
# -fno-trapping-math changes no result: it only tells the compiler that no
# one reads the floating-point exception flags, so that a loop with a select
# (sigmoid's two branches, leaky ReLU) may compute both sides and vectorise.
# -fno-math-errno changes no result either: sqrt() need not set errno, so
# the optimizers' sqrt loops vectorise (Adam, RMSProp, Adagrad).
# -ffp-contract=off forbids fusing a * b + c into one FMA instruction where
# the target has one: every build then rounds alike, so results do not
# depend on the instruction set the extension was compiled for.
COMPILE_FLAGS = {
    "unix": ["-O3", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"],
    "msvc": ["/O2"],
}


def _env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0")


def compiler_directives():
    debug = _env_flag("TINYCORE_DEBUG_CYTHON")
    return {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }


def native_flags():
    return ["-march=native"] if _env_flag("TINYCORE_NATIVE") else []


def sanitizer_flags():
    sanitizers = os.environ.get("TINYCORE_SANITIZE", "").strip()
    if not sanitizers:
        return []
    return [f"-fsanitize={sanitizers}", "-fno-omit-frame-pointer", "-g"]


class BuildExt(build_ext):
    """Apply the flags of the compiler actually in use."""

    def build_extensions(self):
        flags = COMPILE_FLAGS.get(self.compiler.compiler_type, [])
        if self.compiler.compiler_type == "unix":
            flags = flags + native_flags() + sanitizer_flags()
        for ext in self.extensions:
            ext.extra_compile_args = flags + ext.extra_compile_args
            if self.compiler.compiler_type == "unix":
                ext.extra_link_args = sanitizer_flags() + ext.extra_link_args
        super().build_extensions()


def extensions():
    return [
        Extension(
            f"tinycore.{name}",
            [f"tinycore/{name}.pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")],
        )
        for name in MODULES
    ]


setup(
    ext_modules=cythonize(extensions(), compiler_directives=compiler_directives()),
    cmdclass={"build_ext": BuildExt},
)
