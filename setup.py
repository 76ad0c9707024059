"""Build script for tinycore's Cython kernels.

Metadata lives in pyproject.toml; this file only lists the extensions and the
compiler flags.  Environment switches:

TINYCORE_DEBUG_CYTHON=1
    Turn Cython's bounds, wraparound and initialisation checks back on.
TINYCORE_SANITIZE=address,undefined
    Compile and link with -fsanitize=... (GCC/Clang) for sanitizer runs.
TINYCORE_NATIVE=1
    Add -march=native (GCC/Clang) and build one set of kernels: the loops may
    then use every instruction this machine's CPU has (AVX2, AVX-512, ...).
    Only for a build that stays on the machine it was made on: the
    extensions would stop with "illegal instruction" on an older CPU, so
    never set it when building wheels to share.  The other flags stay:
    -ffp-contract=off still forbids the compiler's own FMA fusion, so the
    rounding is that of the portable set for the same CPU (the GEMM tile
    fuses its multiply-adds wherever the target has FMA).

Without TINYCORE_NATIVE, on x86-64 the kernel modules are compiled three
times (SIMD_BUILDS): for the compiler's default baseline, plain x86-64
(SSE2), which every x86-64 CPU runs (GCC and Clang on Debian and Ubuntu; some
distributions' compilers default higher, e.g. x86-64-v2 on RHEL 9), and into
the subpackages tinycore._avx2 (x86-64-v3) and tinycore._avx512 (x86-64-v4).
tinycore._simd imports the widest set the CPU runs.  tests/test_packaging.py
checks the instructions each installed set uses.
"""
import os
import platform

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_blas", "_activations", "_losses", "_dense", "_optim", "_plan"]

# Compiled for the baseline only: what tinycore runs before it chooses a set.
BASELINE_MODULES = ["_cpuid"]

# Each package holds the whole set of kernel modules, compiled with its flags
# (GCC/Clang).  The loops are the same source, vectorised by the compiler for
# the vector width of each level; tinycore/_simd.py picks the package at
# import from the CPU's flags.  Same source and -ffp-contract=off: the three
# give the same results, bit for bit but for the GEMM tile's fused
# multiply-adds in the two FMA sets (tests/test_simd.py compares them).
SIMD_BUILDS = {
    "tinycore": [],                          # x86-64 baseline (SSE2): every CPU
    "tinycore._avx2": ["-march=x86-64-v3"],  # AVX2, FMA, BMI2: Haswell, Zen 1 on
    # GCC's generic tuning keeps AVX-512 code at 256-bit vectors; the
    # elementwise loops are what this set is for, so ask for the full width.
    "tinycore._avx512": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
}

# Where the copies of the sources for the subpackages are written: each
# subpackage's modules cimport their siblings (relative cimports), so every
# set binds to its own kernels, never to another level's.
VARIANT_SOURCE_ROOT = os.path.join("build", "simd_src")

# -O3 for the loops; never -ffast-math: it lets the compiler assume no NaN or
# infinity exists, which breaks the NaN handling and the stable formulas.
# -fno-trapping-math changes no result: it only tells the compiler that no
# one reads the floating-point exception flags, so that a loop with a select
# (sigmoid's two branches, leaky ReLU) may compute both sides and vectorise.
# -fno-math-errno changes no result either: sqrt() need not set errno, so
# the optimizers' sqrt loops vectorise (Adam, RMSProp, Adagrad).
# -ffp-contract=off forbids the compiler to fuse a * b + c into one FMA
# instruction where it sees fit: the elementwise kernels then round alike in
# every build.  The one place that fuses, the GEMM tile (tinycore/_blas.pyx),
# asks for FMA by name, so the AVX2 and AVX-512 sets still agree bit for bit.
COMPILE_FLAGS = {
    # -g0: no debug information (the interpreter's CFLAGS ask for -g); it
    # would triple the size of the installed modules.
    "unix": ["-O3", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off", "-g0"],
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


def builds_simd_sets():
    """Whether to compile the AVX2 and AVX-512 sets beside the baseline."""
    return (os.name == "posix" and platform.machine().lower() in ("x86_64", "amd64")
            and not _env_flag("TINYCORE_NATIVE"))


def _copy_if_changed(source, target):
    # An unchanged copy keeps its time stamp, so cythonize skips it.
    with open(source, "rb") as file:
        content = file.read()
    if os.path.exists(target):
        with open(target, "rb") as file:
            if file.read() == content:
                return
    with open(target, "wb") as file:
        file.write(content)


def variant_source_folder(package):
    """Copy the kernel sources into ``package``'s folder under VARIANT_SOURCE_ROOT.

    Returns the folder.  Cython finds the sibling .pxd files there through
    the __init__.py files, which mark the folders as packages.
    """
    folder = os.path.join(VARIANT_SOURCE_ROOT, *package.split("."))
    os.makedirs(folder, exist_ok=True)
    for depth in range(1, package.count(".") + 2):
        init = os.path.join(VARIANT_SOURCE_ROOT, *package.split(".")[:depth], "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    for name in MODULES:
        for suffix in (".pyx", ".pxd"):
            source = os.path.join("tinycore", name + suffix)
            if os.path.exists(source):
                _copy_if_changed(source, os.path.join(folder, name + suffix))
    return folder


class BuildExt(build_ext):
    """Apply the flags of the compiler actually in use, building in parallel."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        flags = COMPILE_FLAGS.get(self.compiler.compiler_type, [])
        if self.compiler.compiler_type == "unix":
            flags = flags + native_flags() + sanitizer_flags()
        for ext in self.extensions:
            simd_flags = SIMD_BUILDS[ext.name.rpartition(".")[0]]
            if self.compiler.compiler_type != "unix":
                simd_flags = []
            ext.extra_compile_args = flags + simd_flags + ext.extra_compile_args
            if self.compiler.compiler_type == "unix":
                ext.extra_link_args = sanitizer_flags() + ext.extra_link_args
        super().build_extensions()


def extensions():
    packages = list(SIMD_BUILDS) if builds_simd_sets() else ["tinycore"]
    found = []
    for package in packages:
        folder = "tinycore" if package == "tinycore" else variant_source_folder(package)
        found += [
            Extension(
                f"{package}.{name}",
                [os.path.join(folder, name + ".pyx")],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")],
            )
            for name in MODULES
        ]
    found += [Extension(f"tinycore.{name}", [f"tinycore/{name}.pyx"])
              for name in BASELINE_MODULES]
    return found


setup(
    ext_modules=cythonize(extensions(), compiler_directives=compiler_directives(),
                          nthreads=os.cpu_count() or 1),
    cmdclass={"build_ext": BuildExt},
)
