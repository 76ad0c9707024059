"""Packaging: the built extensions run on any x86-64 CPU, and the sdist is right.

A wheel built with ``-march=native`` stops with "illegal instruction" on an
older CPU.  The first tests disassemble every compiled module of the
*installed* tinycore's baseline set (``objdump -d``) and refuse any
instruction beyond the x86-64 baseline (x86-64-v1: SSE and SSE2, no SSE3 and
later, no VEX or EVEX encodings, no AVX registers).  The wider sets
(``tinycore._avx2``, ``tinycore._avx512``), which tinycore._simd imports only
on a CPU that has their level, are checked to use that level and no more.  They are skipped off x86-64, without objdump,
and when ``TINYCORE_NATIVE`` is set at test time (a build made on purpose with
``-march=native``, see setup.py).

The last test builds an sdist from a copy of the checkout and checks what it
holds; it is skipped when the tests do not run from a checkout.
"""
import collections
import importlib.machinery
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap

import pytest

import tinycore
from tinycore import _simd

CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


# -- the x86-64 baseline ------------------------------------------------------------------

#: Instructions (Intel syntax, as ``objdump -M intel`` spells them) that an
#: x86-64-v1 CPU does not have, by the CPUID feature that brings them.  VEX and
#: EVEX instructions (AVX, AVX2, AVX-512, FMA, FMA4, F16C, XOP, the VEX forms of
#: BMI...) all begin with "v" and are caught by BEYOND_BASELINE_PATTERNS.
#: Left out on purpose: SSE/SSE2 and MMX (baseline); ``pminsw``, ``pmaxsw``,
#: ``pminub``, ``pmaxub``, ``pextrw`` and ``pinsrw`` to a register (SSE/SSE2, unlike
#: their SSE4.1 siblings); ``endbr64`` and ``prefetchw`` (hint NOPs on CPUs without
#: them); and ``tzcnt``: it is encoded as ``rep bsf``, which GCC emits for
#: ``__builtin_ctz`` at its generic tuning, and a CPU without BMI1 runs it as ``bsf``
#: (the same result for the non-zero inputs GCC uses it on).  ``lzcnt`` stays
#: listed: without LZCNT it runs as ``bsr`` and gives another result.
BEYOND_BASELINE = {
    "SSE3": {"addsubpd", "addsubps", "haddpd", "haddps", "hsubpd", "hsubps", "lddqu",
             "movddup", "movshdup", "movsldup", "fisttp", "monitor", "mwait"},
    "SSSE3": {"pabsb", "pabsw", "pabsd", "palignr", "phaddw", "phaddd", "phaddsw",
              "phsubw", "phsubd", "phsubsw", "pmaddubsw", "pmulhrsw", "pshufb",
              "psignb", "psignw", "psignd"},
    "SSE4.1": {"blendpd", "blendps", "blendvpd", "blendvps", "dppd", "dpps", "extractps",
               "insertps", "movntdqa", "mpsadbw", "packusdw", "pblendvb", "pblendw",
               "pcmpeqq", "pextrb", "pextrd", "pextrq", "phminposuw", "pinsrb", "pinsrd",
               "pinsrq", "pmaxsb", "pmaxsd", "pmaxud", "pmaxuw", "pminsb", "pminsd",
               "pminud", "pminuw", "pmovsxbw", "pmovsxbd", "pmovsxbq", "pmovsxwd",
               "pmovsxwq", "pmovsxdq", "pmovzxbw", "pmovzxbd", "pmovzxbq", "pmovzxwd",
               "pmovzxwq", "pmovzxdq", "pmuldq", "pmulld", "ptest", "roundpd", "roundps",
               "roundsd", "roundss"},
    "SSE4.2": {"crc32", "pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq"},
    "SSE4a": {"extrq", "insertq", "movntsd", "movntss"},
    "POPCNT": {"popcnt"},
    "LZCNT": {"lzcnt"},
    "BMI1": {"andn", "bextr", "blsi", "blsmsk", "blsr"},
    "BMI2": {"bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx"},
    "TBM": {"blcfill", "blci", "blcic", "blcmsk", "blcs", "blsfill", "blsic", "t1mskc",
            "tzmsk"},
    "MOVBE": {"movbe"},
    "ADX": {"adcx", "adox"},
    "CMPXCHG16B": {"cmpxchg16b"},
    "LAHF-SAHF": {"lahf", "sahf"},
    "RDRAND/RDSEED": {"rdrand", "rdseed"},
    "XSAVE": {"xgetbv", "xsetbv", "xsave", "xsave64", "xsaveopt", "xsaveopt64", "xsavec",
              "xsavec64", "xsaves", "xsaves64", "xrstor", "xrstor64", "xrstors",
              "xrstors64"},
    "other": {"rdtscp", "rdpid", "clflushopt", "clwb", "movdiri", "movdir64b", "serialize"},
}

#: Mnemonic patterns beyond the baseline.
BEYOND_BASELINE_PATTERNS = {
    # Every VEX/EVEX/XOP instruction: AVX, AVX2, AVX-512, FMA, FMA4, F16C, AVX-VNNI...
    # (the only legacy "v" mnemonics, verr and verw, are excluded below).
    "AVX (VEX/EVEX)": re.compile(r"^v(?!err$|erw$)"),
    "AVX-512 mask": re.compile(r"^k(add|and|andn|mov|not|or|ortest|shiftl|shiftr|test|"
                               r"unpck|xnor|xor)[bwdq]*$"),
    "AES": re.compile(r"^aes"),
    "PCLMULQDQ": re.compile(r"^pclmul"),
    "SHA": re.compile(r"^sha(1|256|512)"),
    "GFNI": re.compile(r"^gf2p8"),
    "AMX": re.compile(r"^(ldtilecfg|sttilecfg|tile|tdp)"),
    "3DNow!": re.compile(r"^(femms|pavgusb|pmulhrw|pswapd|pi2f[dw]|pf2i[dw]|pf(acc|add|cmp"
                         r"\w+|max|min|mul|nacc|pnacc|rcp\w*|rsq\w*|sub|subr))$"),
}

#: Registers no x86-64-v1 instruction names: ymm (AVX), zmm and xmm16-31 (AVX-512).
BEYOND_BASELINE_REGISTER = re.compile(r"\b(?:[yz]mm\d+|xmm(?:1[6-9]|2\d|3[01]))\b")

#: Prefixes objdump prints before the mnemonic.
PREFIXES = {"lock", "rep", "repe", "repz", "repne", "repnz", "cs", "ds", "es", "fs", "gs",
            "ss", "data16", "data32", "addr16", "addr32", "notrack", "bnd", "xacquire",
            "xrelease"}
REX = re.compile(r"^rex(\.[WRXB]+)?$")
INSTRUCTION_LINE = re.compile(r"^\s*[0-9a-f]+:\t(.*)$")


#: Guarded instructions, allowed in the named functions only: libgcc's CPU
#: detection (linked into _cpuid by ``__builtin_cpu_init``) runs ``xgetbv``
#: only after CPUID has reported OSXSAVE, which no CPU without XSAVE does.
GUARDED = {"xgetbv": re.compile(r"^get_available_features(\.|$)")}
FUNCTION_LINE = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")


def beyond_baseline(disassembly):
    """The instructions of ``objdump -d --no-show-raw-insn -M intel`` output beyond x86-64-v1.

    Returns (number of instructions read, [(feature, instruction text), ...]).
    """
    count, found, function = 0, [], ""
    for line in disassembly.splitlines():
        function_match = FUNCTION_LINE.match(line)
        if function_match:
            function = function_match.group(1)
            continue
        match = INSTRUCTION_LINE.match(line)
        if not match:
            continue
        text = match.group(1).strip()
        # Drop objdump's symbol annotations ("<name+0x10>") and comments.
        text = re.sub(r"<[^>]*>", "", text).split("#")[0].strip()
        tokens = text.split()
        while tokens and (tokens[0] in PREFIXES or REX.match(tokens[0])):
            tokens = tokens[1:]
        if not tokens:  # a prefix alone on its line
            continue
        count += 1
        mnemonic, operands = tokens[0].lower(), " ".join(tokens[1:])
        feature = None
        if mnemonic == "(bad)":
            feature = "undecodable (objdump too old for this instruction?)"
        for name, mnemonics in BEYOND_BASELINE.items():
            if mnemonic in mnemonics:
                feature = name
        for name, pattern in BEYOND_BASELINE_PATTERNS.items():
            if pattern.match(mnemonic):
                feature = name
        if mnemonic == "pextrw" and "[" in operands.split(",")[0]:
            feature = "SSE4.1"  # pextrw to memory; pextrw to a register is SSE2
        if feature is None and BEYOND_BASELINE_REGISTER.search(operands):
            feature = "AVX registers"
        if mnemonic in GUARDED and GUARDED[mnemonic].match(function):
            feature = None
        if feature is not None:
            found.append((feature, text))
    return count, found


def disassemble(path):
    result = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "intel", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"objdump -d {path} failed:\n{result.stderr}"
    return result.stdout


def _compiled_modules(folder):
    """The Python extension modules directly in ``folder``, sorted."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffixes))


def installed_extensions():
    """The compiled modules of the tinycore that the tests import (and any vendored library)."""
    package = pathlib.Path(tinycore.__file__).resolve().parent
    found = _compiled_modules(package)
    libs = package.parent / "tinycore.libs"  # where auditwheel puts vendored libraries
    if libs.is_dir():
        found += sorted(p for p in libs.iterdir() if ".so" in p.name)
    return found


def _native_build():
    return os.environ.get("TINYCORE_NATIVE", "").strip() not in ("", "0")


needs_x86_64_objdump = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                       or not sys.platform.startswith("linux"),
                       reason="the baseline check is for x86-64 Linux (this is "
                              f"{platform.machine()} {sys.platform})"),
    pytest.mark.skipif(shutil.which("objdump") is None,
                       reason="objdump (GNU binutils) is not installed: cannot disassemble"),
]


@pytest.mark.skipif(_native_build(),
                    reason="TINYCORE_NATIVE is set: this build targets this CPU on purpose")
@pytest.mark.parametrize("path", installed_extensions(), ids=lambda p: p.name.split(".")[0])
@needs_x86_64_objdump[0]
@needs_x86_64_objdump[1]
def test_extension_uses_only_the_x86_64_baseline(path):
    count, found = beyond_baseline(disassemble(path))
    assert count > 100, f"objdump gave only {count} instructions for {path}"
    features = collections.Counter(feature for feature, _ in found)
    shown = "\n".join(f"  {feature}: {text}" for feature, text in found[:10])
    assert not found, (
        f"{path.name} uses {len(found)} instructions beyond x86-64-v1 (of {count}: "
        f"{dict(features)}); built with -march=native? then set TINYCORE_NATIVE=1 "
        f"to skip this check. The first ones:\n{shown}")


# -- the wider sets ----------------------------------------------------------------------------

#: What only AVX-512 has: its registers (zmm, xmm16-31, ymm16-31, the k masks)
#: and the EVEX-only instructions a compiler emits even on 256-bit vectors.
AVX512_REGISTER = re.compile(r"\b(?:zmm\d+|[xy]mm(?:1[6-9]|2\d|3[01])|k[0-7])\b")
AVX512_MNEMONIC = re.compile(
    r"^(?:vpternlog[dq]|vperm[it]2\w+|vrcp14\w+|vrsqrt14\w+|vscalef\w+|vgetexp\w+|"
    r"vgetmant\w+|vrndscale\w+|vfixupimm\w+|vrange\w+|vreduce\w+|vpcompress\w+|"
    r"vcompress\w+|vpexpand\w+|vexpand\w+|vpro[lr]v?[dq]|vpsraq|vpabsq|vp(?:max|min)[su]q|"
    r"vpmullq|vcvt\w*(?:qq|udq|uqq|usi)\w*|vpmov(?:[su]?[qdw][bwd]|m2\w+|\w+2m)|"
    r"vpconflict\w+|vplzcnt\w+|valign[dq]|vdbpsadbw|vpbroadcastm\w+|"
    r"v(?:shuf|insert|extract|broadcast)[if](?:32x[248]|64x[24])|k\w+)$")


def uses_avx512(disassembly):
    """How many instructions of an ``objdump -M intel`` listing need AVX-512."""
    found = 0
    for line in disassembly.splitlines():
        match = INSTRUCTION_LINE.match(line)
        if not match:
            continue
        tokens = re.sub(r"<[^>]*>", "", match.group(1)).split("#")[0].split()
        while tokens and (tokens[0] in PREFIXES or REX.match(tokens[0])):
            tokens = tokens[1:]
        if tokens and (AVX512_MNEMONIC.match(tokens[0].lower())
                       or AVX512_REGISTER.search(" ".join(tokens[1:]))):
            found += 1
    return found


#: The kernel modules, compiled once per level (setup.py's MODULES).
MODULES = {"_blas", "_activations", "_losses", "_dense", "_optim", "_plan"}


def level_extensions(level):
    """The compiled modules of one SIMD level's set (tinycore._simd), [] if not built."""
    package = pathlib.Path(tinycore.__file__).resolve().parent
    folder = package / _simd.PACKAGES[level].removeprefix("tinycore.")
    return _compiled_modules(folder) if folder.is_dir() else []


def test_the_avx512_check_reads_listings_rightly():
    listing = textwrap.dedent("""\
            1000:\tvmulps ymm0,ymm1,ymm2
            1004:\tvaddps ymm1,ymm1,YMMWORD PTR [rax]
            1008:\tvpternlogd ymm0,ymm1,ymm2,0x96
            100e:\tvmulps zmm0,zmm1,zmm2
            1014:\tvmovaps xmm17,xmm1
            101a:\tkmovw  k1,eax
            101e:\tvcvttps2udq ymm0,ymm1
            1024:\tvaddps ymm0{k1},ymm1,ymm2
        """)
    assert uses_avx512(listing) == 6


@pytest.mark.skipif(_native_build(),
                    reason="TINYCORE_NATIVE is set: one set of kernels, for this CPU")
@needs_x86_64_objdump[0]
@needs_x86_64_objdump[1]
@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_each_wider_set_uses_its_level_and_no_more(level):
    """The AVX2 set uses ymm vectors and nothing of AVX-512; the AVX-512 set uses zmm."""
    paths = level_extensions(level)
    assert {p.name.split(".")[0] for p in paths} == set(MODULES), (
        f"the {level} set is incomplete: {[p.name for p in paths]}")
    listings = {p.name.split(".")[0]: disassemble(p) for p in paths}
    wide_vectors = sum(len(re.findall(r"\bymm\d+\b", text)) for text in listings.values())
    assert wide_vectors > 100, f"the {level} set hardly uses 256-bit vectors ({wide_vectors})"
    avx512 = {name: uses_avx512(text) for name, text in listings.items()}
    if level == "avx2":
        assert not any(avx512.values()), f"AVX-512 instructions in the AVX2 set: {avx512}"
    else:
        assert avx512["_activations"] > 100, f"the AVX-512 set hardly uses AVX-512: {avx512}"


#: A few training steps, printing the CPU level tinycore saw, the set it chose and the loss.
_TRAIN_A_LITTLE = """
import numpy as np, tinycore as tc
from tinycore import _cpu, _simd
model = tc.Sequential([tc.Dense(4, 8, activation="tanh"),
                       tc.Dense(8, 3, activation="softmax")], seed=0)
model.compile(loss="cross_entropy", optimizer=tc.Adam(lr=0.01))
x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
y = np.arange(16) % 3
losses = [model.train_step(x, y) for _ in range(5)]
assert losses[-1] < losses[0], losses
print(_cpu.x86_64_level(), _simd.decision["level"])
"""


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="qemu-x86_64 (Debian's qemu-user) is not installed")
@needs_x86_64_objdump[0]
@pytest.mark.parametrize("cpu, level, chosen", [("Nehalem", 2, "baseline"),
                                                ("Haswell", 3, "avx2")])
def test_the_set_follows_the_cpu_that_runs_it(cpu, level, chosen, tmp_path):
    """Under an emulated older CPU tinycore trains, on the set that CPU runs.

    qemu-user shows the host's /proc/cpuinfo (AVX2 here) to the emulated
    Nehalem, which has no AVX: the choice must come from CPUID, or the
    process would stop with "illegal instruction".  Nehalem (x86-64-v2) is
    the oldest model NumPy 2.4's own wheels run on.
    """
    if _native_build():
        pytest.skip("TINYCORE_NATIVE is set: this build targets this CPU on purpose")
    if chosen not in _simd.built_levels():
        pytest.skip(f"the {chosen} set is not built")
    env = {key: value for key, value in os.environ.items() if key != "TINYCORE_SIMD"}
    # The tinycore under test first on the path, whatever the interpreter finds.
    here = str(pathlib.Path(tinycore.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    result = subprocess.run(
        ["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", _TRAIN_A_LITTLE],
        capture_output=True, text=True, timeout=300, env=env, check=False,
        cwd=tmp_path)   # not the checkout: python -c puts its folder first on sys.path
    messages = [line for line in result.stderr.splitlines() if "TCG doesn't support" not in line]
    assert result.returncode == 0, "\n".join(messages[-20:])
    assert result.stdout.split() == [str(level), chosen]


def test_every_extension_is_installed():
    """Each stub (_name.pyi) has its compiled module beside it, so the check above saw them all."""
    package = pathlib.Path(tinycore.__file__).resolve().parent
    stubs = {p.name.removesuffix(".pyi") for p in package.glob("_*.pyi")}
    compiled = {p.name.split(".")[0] for p in installed_extensions() if p.parent == package}
    assert stubs, f"no .pyi stubs in {package}"
    assert stubs <= compiled, f"stubs without a compiled module: {sorted(stubs - compiled)}"


def test_the_baseline_list_sorts_instructions_rightly():
    lines = textwrap.dedent("""\
        0000000000001000 <f>:
            1000:\tendbr64
            1004:\taddps  xmm0,xmm1
            1008:\tpminsw xmm0,xmm1
            100c:\tpextrw eax,xmm0,0x1
            1010:\tlock cmpxchg DWORD PTR [rip+0x0],edx        # 2000 <x>
            1018:\tcs nop WORD PTR [rax+rax*1+0x0]
            1020:\ttzcnt  eax,edi
            1024:\tverw   WORD PTR [rax]
            1028:\tvfmadd231ps ymm0,ymm1,ymm2
            102e:\tpminsd xmm0,xmm1
            1033:\tpextrw WORD PTR [rdi],xmm0,0x1
            1039:\tpopcnt eax,edi
            103d:\tpshufb xmm0,xmm1
            1042:\tkmovw  k1,eax
            1046:\trep stos QWORD PTR es:[rdi],rax
            104a:\tlock cmpxchg16b OWORD PTR [rdi]
            104f:\thaddpd xmm0,xmm1
            1053:\tmovq   rax,xmm17
            1059:\tshlx   eax,edi,esi
            105e:\txgetbv

        0000000000002000 <get_available_features.constprop.0>:
            2000:\txgetbv
        """)
    count, found = beyond_baseline(lines)
    assert count == 21
    assert [feature for feature, _ in found] == [
        "AVX (VEX/EVEX)", "SSE4.1", "SSE4.1", "POPCNT", "SSSE3", "AVX-512 mask",
        "CMPXCHG16B", "SSE3", "AVX registers", "BMI2", "XSAVE"]


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler to build a known sample")
@needs_x86_64_objdump[0]
@needs_x86_64_objdump[1]
@pytest.mark.parametrize("march, expect_clean", [("x86-64", True), ("haswell", False)])
def test_the_baseline_check_sees_avx2(tmp_path, march, expect_clean):
    """The same loop compiled for x86-64 passes, compiled for Haswell (AVX2, FMA) fails."""
    source = tmp_path / "saxpy.c"
    source.write_text("void saxpy(int n, float a, const float *x, float *y) {\n"
                      "    for (int i = 0; i < n; i++) y[i] = a * x[i] + y[i];\n}\n")
    library = tmp_path / f"saxpy-{march}.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([compiler, "-O3", f"-march={march}", "-ffp-contract=fast", "-shared",
                    "-fPIC", "-o", str(library), str(source)], check=True)
    count, found = beyond_baseline(disassemble(library))
    assert count > 0
    assert (not found) == expect_clean, found


# -- the sdist ----------------------------------------------------------------------------

#: Not copied from the checkout: version control, build output, caches, environments.
_NOT_COPIED = shutil.ignore_patterns(".git", "build", "dist", "wheelhouse", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".hypothesis",
                                     ".benchmarks", ".ruff_cache", ".venv", ".mypy_cache")


# slow: about 3 s when the checkout's Cython output is up to date, 17 s or more on two
# cores when the sdist build has to run Cython on every module.
@pytest.mark.slow
def test_sdist_holds_the_sources_and_nothing_generated(tmp_path):
    sources = sorted((CHECKOUT / "tinycore").glob("*.pyx"))
    if not (CHECKOUT / "setup.py").is_file() or not sources:
        pytest.skip(f"no checkout beside this test file ({CHECKOUT} has no setup.py or .pyx "
                    "sources): the tests run against a wheel installed from elsewhere")
    for module in ("setuptools", "Cython", "numpy", "scipy"):
        pytest.importorskip(module, reason=f"building the sdist needs {module}")
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot read the SPDX license")

    # A copy keeps the checkout clean (egg-info, Cython's .c); the copy keeps any .c and
    # .so that the checkout has, so that leaving them out is really tested.
    copy = tmp_path / "src"
    shutil.copytree(CHECKOUT, copy, ignore=_NOT_COPIED)
    out = tmp_path / "dist"
    out.mkdir()
    build = subprocess.run(
        [sys.executable, "-c",
         "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))", str(out)],
        cwd=copy, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")

    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        root = names[0].split("/")[0]
        members = {name.split("/", 1)[1] for name in names if "/" in name}
        pkg_info = archive.extractfile(f"{root}/PKG-INFO").read().decode()

    expected = {"README.md", "LICENSE", "pyproject.toml", "setup.py", "tinycore/py.typed",
                "tinycore/_avx2/__init__.py", "tinycore/_avx512/__init__.py"}
    for pattern in ("*.pyx", "*.pxd", "*.pyi"):
        expected |= {f"tinycore/{p.name}" for p in (CHECKOUT / "tinycore").glob(pattern)}
    expected |= {f"tests/{p.name}" for p in (CHECKOUT / "tests").glob("*.py")}
    assert not expected - members, f"missing from the sdist: {sorted(expected - members)}"

    generated = [m for m in members
                 if m.endswith((".c", ".cpp", ".so", ".pyd", ".html", ".pyc"))
                 or "__pycache__" in m or m.split("/")[0] in ("benchmarks", "build", "dist")]
    assert not generated, f"the sdist holds generated files or benchmarks: {sorted(generated)}"

    assert "License-Expression: BSD-3-Clause" in pkg_info
    assert "Requires-Python: >=3.10" in pkg_info
    assert "Classifier: License ::" not in pkg_info
