"""Compare tinycore's builds on its kernel and training-step benchmarks.

Usage::

    python benchmarks/compare_builds.py [--rounds N] [--output BENCHMARKS.md]
                                        [--workdir DIR] [-- pytest options]

Three builds of this checkout run tinycore's own benchmarks in
test_kernels.py and test_train_step.py (``-k tinycore``: the peers' are left
out, they do not change with the build):

==========  ===================================================================
dispatched  the checkout's build as the wheels ship it: the kernels compiled
            for x86-64, x86-64-v3 and x86-64-v4, the widest set the CPU runs
            loaded at import (``TINYCORE_SIMD`` unset)
baseline    the same build with ``TINYCORE_SIMD=baseline``: plain x86-64 (SSE2)
native      a ``TINYCORE_NATIVE=1`` build (one set, ``-march=native``), made in
            a copy of the checkout in the work directory
==========  ===================================================================

Each run is a process of its own with one BLAS thread
(``TINYCORE_BENCH_THREADS=1``, see conftest.py), so that a thread descheduled
by another process on a shared machine does not stall a BLAS call.  The runs
are interleaved and repeated (round 1 dispatched, baseline, native; round 2
the other way round; ...) and per benchmark the best of the rounds' medians
is kept: a burst of load from elsewhere then spoils one round of one build,
not a ratio.  Before and after the runs, the script checks that each process
loaded the set of kernels it claims (``tc.show_config()["simd"]``, recorded
in the JSON files by conftest.py) from the tinycore it claims.

The markdown section goes into the output file between report.py's
BUILDS_START and BUILDS_END markers (replacing the previous one; new, it goes
before "## Machine and versions").  report.py keeps the section when it
rewrites the file, so the two runs can be redone in any order.

Standard library only, and report.py (beside this file) for the formatting.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from report import BUILDS_END, BUILDS_START, _train_key, fmt_ratio, fmt_us, table

ROOT = Path(__file__).resolve().parent.parent
BENCH_FILES = ["benchmarks/test_kernels.py", "benchmarks/test_train_step.py"]
BUILDS = ("dispatched", "baseline", "native")

#: pytest-benchmark options unless others are given after "--": enough rounds
#: for a median, and a short time budget per benchmark.  On a shared machine
#: the noise comes in bursts that slow a whole process down (a median of one
#: run moved by 50% from one run to the next when this was written), so more,
#: shorter runs (--rounds) buy more than longer ones.
DEFAULT_BENCH_OPTIONS = ["--benchmark-min-rounds=5", "--benchmark-max-time=0.4"]

#: Left out of the copy for the native build: the compiled modules and the
#: generated C (rebuilt there), and caches.
COPY_IGNORE = shutil.ignore_patterns(".git", "build", "*.so", "*.c", "__pycache__",
                                     ".pytest_cache", ".hypothesis", ".ruff_cache",
                                     ".benchmarks", "*.egg-info")

#: What each package's kernels were compiled for (setup.py's SIMD_BUILDS), to
#: describe the builds in the report.
COMPILED_FOR = {"tinycore": "x86-64 (the compiler's default, SSE2)",
                "tinycore._avx2": "-march=x86-64-v3",
                "tinycore._avx512": "-march=x86-64-v4"}

# The CPU flags of x86-64-v3 and -v4, as Linux lists them (abm is LZCNT): the
# level the dispatched run must have loaded, worked out here independently
# of the code under test.
_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}

#: Benchmark groups by prefix, for the summary table (order of the report).
KINDS = [("train-", "training step (T1–T5)"), ("dense-", "dense layer (GEMM-bound)"),
         ("act-", "activations and derivatives"), ("sgd-", "SGD update"),
         ("optim-", "optimizer updates"), ("softmax-ce-", "softmax + cross-entropy")]

# Imports tinycore as a benchmark run would and prints what it loaded.
_PROBE = ("import io, json, tinycore as tc; "
          "print(json.dumps({'file': tc.__file__, "
          "'simd': tc.show_config(file=io.StringIO())['simd']}))")


# -- the builds ----------------------------------------------------------------------

def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def expected_dispatched_level() -> str:
    flags = cpu_flags()
    return "avx512" if _V4 <= flags else "avx2" if _V3 <= flags else "baseline"


def native_march() -> str:
    """What -march=native means to the C compiler here, e.g. "znver3"."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    try:
        out = subprocess.run([compiler, "-march=native", "-Q", "--help=target"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.strip().startswith("-march="):
            return line.split()[-1]
    return "unknown"


def compiler_version() -> str:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return compiler
    return out.splitlines()[0] if out else compiler


def build_env(root: Path, simd: str | None) -> dict:
    """The environment of a run: this tinycore only, one thread, the level asked."""
    env = dict(os.environ)
    for name in ("TINYCORE_SIMD", "TINYCORE_NATIVE"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(root)        # not the caller's: it may name another checkout
    env["TINYCORE_BENCH_THREADS"] = "1"
    if simd:
        env["TINYCORE_SIMD"] = simd
    return env


def make_native(workdir: Path, log) -> Path:
    """Copy the checkout into ``workdir``/checkout and build it with TINYCORE_NATIVE=1."""
    # The copy's folder name must not contain "tinycore": pytest's -k matches
    # the names of the folders above a test too.
    copy = workdir / "checkout"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
    env = dict(os.environ, TINYCORE_NATIVE="1")
    env.pop("PYTHONPATH", None)
    print(f"building the native set in {copy} ...", flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
                            cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"the native build failed (exit {result.returncode}); see {log.name}")
    print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    return copy


def check_simd(build: str, root: Path, found: dict, expected_level: str) -> None:
    """Stop unless a process of ``build`` imported ``root``'s tinycore at its level."""
    simd = found["simd"]
    problems = []
    if not Path(found["file"]).resolve().is_relative_to(root.resolve()):
        problems.append(f"tinycore was imported from {found['file']}, not from {root}")
    if simd["level"] != expected_level:
        problems.append(f"the {simd['level']} kernels ran, not {expected_level} "
                        f"({simd['reason']})")
    if build == "native" and simd["package"] != "tinycore":
        problems.append(f"the native build loaded {simd['package']}: it has one set only")
    if problems:
        sys.exit(f"{build}: " + "; ".join(problems))


def probe(root: Path, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"cannot import tinycore from {root}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the runs --------------------------------------------------------------------------

def run_benchmarks(build: str, root: Path, env: dict, json_path: Path, options: list[str],
                   log_path: Path) -> float:
    """One pytest process of tinycore's benchmarks; return its wall time in s."""
    command = [sys.executable, "-m", "pytest", *BENCH_FILES, "-k", "tinycore",
               "-p", "no:cacheprovider", "-q", "--benchmark-only",
               f"--benchmark-json={json_path}", *options]
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"cd {root}\n{shlex.join(command)}\n\n")
        log.flush()
        result = subprocess.run(command, cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if result.returncode:
        tail = log_path.read_text(encoding="utf-8").splitlines()[-30:]
        sys.exit(f"{build}: pytest failed (exit {result.returncode}), {log_path}:\n"
                 + "\n".join(tail))
    return elapsed


def load_run(path: Path) -> tuple[dict, dict]:
    """({group: median s}, machine_info["tinycore_bench"]) of one JSON file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    medians = {}
    for bench in data["benchmarks"]:
        engine = (bench.get("extra_info") or {}).get("engine")
        if engine != "tinycore":
            sys.exit(f"{path}: {bench['fullname']} is not a tinycore benchmark "
                     f"(engine {engine!r}); check the -k selection")
        medians[bench.get("group") or bench["name"]] = float(bench["stats"]["median"])
    info = data["machine_info"].get("tinycore_bench", {})
    if "simd" not in info:
        sys.exit(f"{path}: no SIMD level recorded (benchmarks/conftest.py records it)")
    return medians, info


# -- the report ------------------------------------------------------------------------

def _kind(group: str) -> str:
    return next((label for prefix, label in KINDS if group.startswith(prefix)), "other")


def _order(group: str) -> tuple:
    prefixes = [prefix for prefix, _ in KINDS]
    rank = next((i for i, p in enumerate(prefixes) if group.startswith(p)), len(prefixes))
    return (rank,) + (_train_key(group) if group.startswith("train-") else (0, group))


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def section(runs: dict, infos: dict, roots: dict, argv: list[str], options: list[str],
            rounds: int, minutes: float, march: str) -> list[str]:
    """The markdown section, markers included.

    ``runs[build]`` is a list (one per round) of {group: median s}.
    """
    best = {build: {group: min(run[group] for run in runs[build])
                    for group in runs[build][0]} for build in BUILDS}
    groups = sorted(best["dispatched"], key=_order)
    rows, ratios = [], {}
    for group in groups:
        d, b, n = (best[build][group] for build in BUILDS)
        # The rounds' disagreement: the noise that a ratio should be read against.
        spread = max(max(run[group] for run in runs[build])
                     / min(run[group] for run in runs[build]) - 1 for build in BUILDS)
        ratios.setdefault(_kind(group), []).append((d / n, d / b))
        rows.append([f"`{group}`", fmt_us(d), fmt_us(b), fmt_us(n), fmt_ratio(d, n),
                     fmt_ratio(d, b), f"{100 * spread:.0f}%"])
    summary = []
    for _, label in KINDS + [("", "other")]:
        pairs = ratios.get(label)
        if not pairs:
            continue
        to_native, to_baseline = [p[0] for p in pairs], [p[1] for p in pairs]
        within = sum(r <= 1.05 for r in to_native)
        summary.append([label, str(len(pairs)), f"{_geomean(to_native):.2f}",
                        f"{max(to_native):.2f}", f"{within}/{len(pairs)}",
                        f"{_geomean(to_baseline):.2f}", f"{min(to_baseline):.2f}"])

    info = infos["dispatched"]
    versions = info.get("versions", {})
    build_rows = []
    for build in BUILDS:
        simd = infos[build]["simd"]
        compiled = (f"-march=native ({march})" if build == "native"
                    else COMPILED_FOR.get(simd["package"], "?"))
        build_rows.append([build, f"`{simd['package']}`", simd["level"], compiled,
                           simd["vector_isa"], simd["reason"]])
    blas = ", ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')})"
                     for p in info.get("tinycore_blas", []))
    commands = []
    for build in BUILDS:
        commands += [f"# {build}", f"cd {infos[build].get('cwd', roots[build])}",
                     infos[build].get("command", "?")]
    return [
        BUILDS_START,
        "## SIMD builds: dispatched vs baseline vs -march=native",
        "",
        "Written by `benchmarks/compare_builds.py` (a run of its own, kept as it is "
        "when `report.py` rewrites this file). tinycore's kernel and training-step "
        "benchmarks, three builds of the same source, each run in its own process "
        "with one BLAS thread: **dispatched** is the build the wheels ship "
        "(three sets of kernels, the widest the CPU runs chosen at import), "
        "**baseline** the same build with `TINYCORE_SIMD=baseline`, **native** a "
        "`TINYCORE_NATIVE=1` build (one set, `-march=native`) of a copy of the "
        f"checkout. {rounds} round{'s' if rounds != 1 else ''}, interleaved (the order "
        "reversed every other round); per benchmark the best of the rounds' medians, in µs. "
        "**Ratios < 1 mean the dispatched build is faster.** \"Round spread\" is "
        "the largest disagreement between the rounds of one build: read the ratios "
        "against it.",
        "",
        *table(["benchmark", "dispatched µs", "baseline µs", "native µs",
                "dispatched / native", "dispatched / baseline", "round spread"], rows),
        "",
        "Per kind of benchmark: the geometric mean and the worst of dispatched / "
        "native, how many are within 5% of native, and the geometric mean and the "
        "best of dispatched / baseline.",
        "",
        *table(["kind", "n", "÷ native (mean)", "÷ native (worst)", "within 5%",
                "÷ baseline (mean)", "÷ baseline (best)"], summary),
        "",
        "The builds, as each run reported them (`tc.show_config()[\"simd\"]`, "
        "recorded in the JSON files):",
        "",
        *table(["build", "package", "level", "compiled with", "vector ISA", "why"],
               build_rows, "llllll"),
        "",
        *table(["", ""], [
            ["CPU", f"{info.get('cpu_model', '?')}, {info.get('logical_cpus', '?')} "
                    f"logical CPUs, {info.get('usable_cpus', '?')} usable"],
            ["threads", str(info.get("threads", "?"))],
            ["compiler", compiler_version()],
            ["versions", ", ".join(f"{name} {versions[name]}" for name in
                                   ("python", "numpy", "scipy", "tinycore",
                                    "pytest-benchmark") if name in versions)],
            ["BLAS (tinycore, via SciPy)", blas or "?"],
            ["written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
             + f", the whole comparison took {minutes:.1f} min"],
        ], "ll"),
        "",
        "Command, and the pytest run of each build (from the JSON files):",
        "",
        "```",
        f"cd {ROOT}",
        "python " + shlex.join(["benchmarks/compare_builds.py", *argv]),
        "```",
        "",
        "```",
        *commands,
        "```",
        BUILDS_END,
    ]


def splice(text: str, block: str) -> str:
    """``text`` with ``block`` in place of the marked section (see the module doc)."""
    start, end = text.find(BUILDS_START), text.find(BUILDS_END)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(BUILDS_END):]
    anchor = text.find("\n## Machine and versions")
    if anchor >= 0:
        return text[:anchor + 1] + block + "\n\n" + text[anchor + 1:]
    return text.rstrip() + "\n\n" + block + "\n"


# -- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs of each build, interleaved (default 5)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="markdown file to write the section into (default BENCHMARKS.md)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the native copy, the JSON files and the logs here "
                             "(default: a temporary directory, removed at the end)")
    parser.add_argument("pytest_options", nargs="*", metavar="-- OPTIONS",
                        help="pytest-benchmark options after '--' (default: "
                             + " ".join(DEFAULT_BENCH_OPTIONS) + ")")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    options = args.pytest_options or DEFAULT_BENCH_OPTIONS
    started = time.monotonic()

    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="simd-builds-")
        workdir = Path(temporary.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        with open(workdir / "native-build.log", "w", encoding="utf-8") as log:
            native_root = make_native(workdir, log)
        roots = {"dispatched": ROOT, "baseline": ROOT, "native": native_root}
        envs = {"dispatched": build_env(ROOT, None),
                "baseline": build_env(ROOT, "baseline"),
                "native": build_env(native_root, None)}
        levels = {"dispatched": expected_dispatched_level(), "baseline": "baseline",
                  "native": "baseline"}   # the native build's one set is its "baseline"
        for build in BUILDS:                # fail now, not after the runs
            check_simd(build, roots[build], probe(roots[build], envs[build]), levels[build])

        runs = {build: [] for build in BUILDS}
        infos = {}
        for index in range(args.rounds):
            order = BUILDS if index % 2 == 0 else BUILDS[::-1]
            for build in order:
                json_path = workdir / f"{build}-round{index + 1}.json"
                seconds = run_benchmarks(build, roots[build], envs[build], json_path, options,
                                         workdir / f"{build}-round{index + 1}.log")
                medians, info = load_run(json_path)
                check_simd(build, roots[build],
                           {"file": info["tinycore_file"], "simd": info["simd"]},
                           levels[build])
                runs[build].append(medians)
                infos[build] = info
                print(f"round {index + 1}, {build}: {len(medians)} benchmarks, "
                      f"{seconds:.0f} s", flush=True)
        names = {build: set(runs[build][0]) for build in BUILDS}
        if any(set(run) != names["dispatched"] for build in BUILDS for run in runs[build]):
            sys.exit(f"the runs measured different benchmarks: {names}")

        minutes = (time.monotonic() - started) / 60
        block = "\n".join(section(runs, infos, roots, argv, options, args.rounds, minutes,
                                  native_march()))
        text = args.output.read_text(encoding="utf-8") if args.output.exists() else \
            "# tinycore benchmarks\n"
        args.output.write_text(splice(text, block), encoding="utf-8")
        print(f"wrote the section into {args.output} ({len(names['dispatched'])} "
              f"benchmarks, {minutes:.1f} min)")
    finally:
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
