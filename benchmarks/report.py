"""Turn a pytest-benchmark JSON file into a markdown report.

Usage::

    python benchmarks/report.py bench.json BENCHMARKS.md [--best-of bench2.json ...]
                                [--also other.json]

Per benchmark group: each engine's median time, the ratio tinycore / peer of
the medians (< 1 means tinycore is faster), and for the training steps the
achieved GFLOP/s (6 * batch * sum(in * out) flops per step) and its fraction
of the sgemm peak measured in the same run; for the GEMM-bound steps, each
engine's matrix products alone and the rest of its step (the difference);
and tinycore's step as fit takes it (every gradient checked first) beside
its plain step.
The machine, the versions and the exact command come from the JSON file
(benchmarks/conftest.py records them), so the report describes the run, not
the machine that writes it.

With ``--best-of``, further runs of the same command count too: per group
and engine, the run with the lowest median is reported (its whole record,
spread included), as compare_builds.py does with its rounds.  On a shared
machine a burst of load from elsewhere then spoils one run of one engine,
not the table.

The section that benchmarks/compare_builds.py writes into the same file (the
SIMD builds compared, a run of its own, between the BUILDS_START and
BUILDS_END markers) is kept as it is, after the kernel tables.

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

TRAIN_ENGINES = ("tinycore", "numpy", "torch", "jax")
REFERENCE = "tinycore"

#: Markers around compare_builds.py's section of the output file.
BUILDS_START = "<!-- simd-builds:start -->"
BUILDS_END = "<!-- simd-builds:end -->"


# -- reading -------------------------------------------------------------------

def _engine(bench: dict) -> str:
    extra = bench.get("extra_info") or {}
    params = bench.get("params") or {}
    return str(extra.get("engine") or params.get("engine") or bench["name"])


def load(path: Path) -> tuple[dict, dict]:
    """Return ({group: {engine: benchmark}}, the whole JSON document)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or bench["name"]][_engine(bench)] = bench
    return dict(groups), data


def median(bench: dict | None) -> float | None:
    return None if bench is None else float(bench["stats"]["median"])


def best_of(runs: list[dict]) -> dict:
    """{group: {engine: benchmark}} keeping, per group and engine, the run's
    benchmark with the lowest median."""
    best: dict[str, dict[str, dict]] = defaultdict(dict)
    for groups in runs:
        for name, engines in groups.items():
            for engine, bench in engines.items():
                kept = best[name].get(engine)
                if kept is None or median(bench) < median(kept):
                    best[name][engine] = bench
    return dict(best)


def sgemm_peak(groups: dict) -> tuple[float | None, str]:
    """GFLOP/s of NumPy's float32 matmul (median time), and its group name."""
    for name in sorted(groups):
        if name.startswith("sgemm-") and "numpy" in groups[name]:
            bench = groups[name]["numpy"]
            return bench["extra_info"]["flops"] / median(bench) / 1e9, name
    return None, ""


def fastest_sgemm(groups: dict) -> tuple[float | None, str]:
    """GFLOP/s of the fastest engine's float32 matmul in the sgemm group
    (median time), and that engine."""
    _, name = sgemm_peak(groups)
    if not name:
        return None, ""
    rates = {engine: bench["extra_info"]["flops"] / median(bench) / 1e9
             for engine, bench in groups[name].items()}
    engine = max(rates, key=rates.get)
    return rates[engine], engine


# -- formatting ----------------------------------------------------------------

def fmt_us(seconds: float | None) -> str:
    if seconds is None:
        return "skipped"
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "–"
    ratio = ours / theirs
    # Two decimals, or two significant digits for the small ratios.
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def fmt_gflops(value: float | None, peak: float | None) -> str:
    if value is None:
        return "–"
    if value < 0.01:
        return "< 0.01"
    text = f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if peak:
        share = 100 * value / peak
        text += f" ({share:.0f}%)" if share >= 1 else " (< 1%)"
    return text


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or ("l" + "r" * (len(header) - 1))
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _train_key(group: str) -> tuple:
    # "train-T3-..." sorts by its number, T10 after T9.
    key = group.split("-")[1] if group.count("-") else group
    return (int(key[1:]) if key[1:].isdigit() else 1 << 30, group)


# -- sections --------------------------------------------------------------------

def machine_section(data: dict) -> list[str]:
    info = data.get("machine_info", {})
    bench = info.get("tinycore_bench", {})
    versions = bench.get("versions", {})
    cpuinfo = info.get("cpu", {})
    cpu = bench.get("cpu_model") or cpuinfo.get("brand_raw", "unknown")
    # Virtual machines often report a bare "AMD EPYC": the family and model
    # numbers tell the generations apart (25/17 is Zen 4, 26 is Zen 5).
    if "family" in cpuinfo:
        cpu += (f" (family {cpuinfo['family']}, model {cpuinfo.get('model', '?')}, "
                f"{cpuinfo.get('hz_advertised_friendly', '? GHz')})")
    rows = [
        ["CPU", f"{cpu}"],
        ["cores", f"{bench.get('logical_cpus', cpuinfo.get('count', '?'))} "
                  f"logical, {bench.get('usable_cpus', '?')} usable by the process"
                  + (f", pinned to CPU {', '.join(map(str, bench['pinned_cpus']))} for the run"
                     if bench.get("pinned_cpus") else "")],
        ["threads per engine", f"{bench.get('threads', '?')} (BLAS through threadpoolctl, "
                               "`torch.set_num_threads`, XLA through `XLA_FLAGS`"
                               f"{' = ' + repr(bench['xla_flags']) if bench.get('xla_flags') else ', unset: its own pool'})"],
        ["system", f"{info.get('system', '?')} {info.get('release', '')}".strip()],
        ["JSON written (end of run)", data.get("datetime", "?")],
    ]
    for name in ("python", "numpy", "scipy", "torch", "jax", "jaxlib", "tinycore",
                 "threadpoolctl", "pytest-benchmark"):
        if name in versions:
            rows.append([name, versions[name]])
    if "python" not in versions and "python_version" in info:
        rows.append(["python", info["python_version"]])
    for label, pools in (("BLAS (tinycore, via SciPy)", bench.get("tinycore_blas", [])),
                         ("BLAS (NumPy)", bench.get("numpy_blas", []))):
        for pool in pools:
            rows.append([label, f"{pool.get('internal_api')} {pool.get('version')}, "
                                f"kernels {pool.get('architecture')}, "
                                f"{pool.get('num_threads')} threads"])
    if "tinycore_file" in bench:
        rows.append(["tinycore imported from", f"`{bench['tinycore_file']}`"])
    return ["## Machine and versions", ""] + table(["", ""], rows, "ll") + [""]


def command_section(data: dict, argv: list[str]) -> list[str]:
    bench = data.get("machine_info", {}).get("tinycore_bench", {})
    command = bench.get("command", "unknown (JSON not written by this suite's conftest)")
    lines = ["## Commands", "", "```"]
    if bench.get("cwd"):
        lines.append(f"cd {bench['cwd']}")
    lines += [command, "python " + shlex.join(argv), "```", ""]
    return lines


def train_section(groups: dict, peak: float | None, title: str = "## Training step",
                  intro: bool = True, fastest: tuple = (None, "")) -> list[str]:
    names = sorted((g for g in groups if g.startswith("train-")), key=_train_key)
    if not names:
        return []
    peers = [e for e in TRAIN_ENGINES if e != REFERENCE]
    present = [e for e in TRAIN_ENGINES if any(e in groups[g] for g in names)]
    header = ["configuration"] + [f"{e} µs" for e in TRAIN_ENGINES] + \
             [f"tinycore / {p}" for p in peers]
    rows, flop_rows, shares = [], [], []
    for name in names:
        engines = groups[name]
        ours = median(engines.get(REFERENCE))
        rows.append([f"`{name}`"] + [fmt_us(median(engines.get(e))) for e in TRAIN_ENGINES]
                    + [fmt_ratio(ours, median(engines.get(p))) for p in peers])
        flops = next((b["extra_info"].get("flops") for b in engines.values()
                      if "flops" in b.get("extra_info", {})), None)
        if flops:
            flop_rows.append(
                [f"`{name}`", f"{flops:,}"]
                + [fmt_gflops(flops / median(engines[e]) / 1e9 if e in engines else None, peak)
                   for e in TRAIN_ENGINES])
            if ours and fastest[0]:
                shares.append((name.split("-")[1], flops / ours / 1e9 / fastest[0]))
    lines = [title, ""]
    if intro:
        lines += [
            "One full step (forward, loss, backward, SGD update), float32, the same "
            "seeded batch and the same initial weights for every engine. Median time "
            "per step in µs; the last columns are tinycore's median over the peer's "
            "(**< 1 means tinycore is faster**).",
            "",
        ]
    lines += table(header, rows) + [""]
    missing = [e for e in TRAIN_ENGINES if e not in present]
    if missing:
        lines += [f"Not measured in this run (skipped, not installed): {', '.join(missing)}.", ""]
    if flop_rows:
        peak_text = f"{peak:.1f} GFLOP/s" if peak else "not measured"
        lines += [
            f"Achieved GFLOP/s, counting 6 · batch · Σ(in · out) flops per step (the "
            f"three matrix products), and in parentheses the fraction of the sgemm "
            f"peak of this run ({peak_text}, NumPy float32 matmul, n = 1024).",
            "",
        ]
        lines += table(["configuration", "flops / step"]
                       + [f"{e} GFLOP/s" for e in TRAIN_ENGINES], flop_rows) + [""]
    # The steps against the fastest matrix product of the run, whichever
    # library's (those at 1% of it or more).
    listed = [f"{key} {100 * share:.0f}%" for key, share in shares if share >= 0.01]
    if listed and fastest[1] != "numpy":
        lines += [f"The fastest sgemm of this run was {fastest[1]}'s, {fastest[0]:.1f} "
                  f"GFLOP/s ({fastest[0] / peak:.2f} × NumPy's); tinycore's steps as a "
                  f"fraction of it: {', '.join(listed)}.", ""]
    return lines


def products_section(groups: dict, peak: float | None) -> list[str]:
    """The products-* groups: each engine's matrix products alone, and what is
    left of its training step (same configuration, same run) without them."""
    names = sorted((g for g in groups if g.startswith("products-")), key=_train_key)
    if not names:
        return []
    rows = []
    for name in names:
        engines = groups[name]
        steps = groups.get(name.replace("products-", "train-", 1), {})
        cells = []
        for engine in TRAIN_ENGINES:
            products, step = median(engines.get(engine)), median(steps.get(engine))
            if products is None:
                cells.append("skipped")
                continue
            flops = engines[engine]["extra_info"]["flops"]
            text = f"{fmt_us(products)}, {fmt_gflops(flops / products / 1e9, peak)}"
            if step is not None:
                rest = step - products
                # Both are medians of separate measurements: on a busy machine
                # the products alone can time slower than the whole step.
                text += f"; rest {fmt_us(rest)}" if rest >= 0 else "; rest n/a"
            cells.append(text)
        rows.append([f"`{name}`"] + cells)
    return [
        "### The matrix products alone",
        "",
        "The step's products (forward X·W, then per layer dW = Xᵀ·dZ and dX = dZ·Wᵀ) in "
        "step order on the same operands, nothing else, each engine through the "
        "library it trains with (tinycore: its `_gemm`, SciPy's BLAS beyond the small "
        "products; on two threads, T3's and T4's in its own tiles, each product split by "
        "the output's columns between the threads). Per engine: median µs, GFLOP/s (fraction of the sgemm peak), and "
        "the rest of its training step above (step median − products median: bias, "
        "activations, loss, update, and the engine's own overhead; n/a where the products "
        "alone timed slower than the whole step, which only noise explains).",
        "",
    ] + table(["products of"] + [f"{e}" for e in TRAIN_ENGINES], rows) + [""]


def guard_section(groups: dict) -> list[str]:
    """The guard-* groups: tinycore's step as fit takes it (every gradient
    checked before the update) beside its plain step of the same run."""
    names = sorted((g for g in groups if g.startswith("guard-")), key=_train_key)
    if not names:
        return []
    rows = []
    for name in names:
        guarded = median(groups[name].get("tinycore"))
        plain = median(groups.get(name.replace("guard-", "train-", 1), {}).get("tinycore"))
        extra = (fmt_us(guarded - plain) if guarded is not None and plain is not None
                 and guarded >= plain else "n/a")
        rows.append([f"`{name}`", fmt_us(plain), fmt_us(guarded), extra,
                     fmt_ratio(guarded, plain)])
    return [
        "### The step as `fit` takes it",
        "",
        "tinycore's `train_step(check_finite=True)`: every gradient checked before the "
        "update, which `fit` always does, against its plain step above (medians, µs; n/a "
        "where the guarded step timed faster, which only noise explains).",
        "",
    ] + table(["configuration", "train_step µs", "checked µs", "extra µs",
               "checked / train_step"], rows) + [""]


def kernel_section(groups: dict, peak: float | None, peak_group: str) -> list[str]:
    kinds = [
        ("dense-forward-", "Dense layer, forward (relu)",
         "`Dense.forward` (validates, allocates Z and A) vs `np.matmul(out=)` + bias + "
         "relu into preallocated arrays."),
        ("dense-backward-", "Dense layer, backward (relu)",
         "`Dense.backward` vs relu' + Xᵀ·dZ + column sum + dZ·Wᵀ into preallocated arrays."),
        ("act-", "Activations and derivatives, 256 × 1024 float32",
         "`tc.activations.<name>` (validates, allocates) vs the NumPy formula."),
        ("sgd-", "SGD update", "`tc.SGD(lr).step(model)` (one kernel over the flat "
         "buffer) vs `w -= lr * g` per parameter array."),
        ("optim-", "Optimizer updates", "`optimizer.step(model)` (one kernel over the flat "
         "buffer) vs the rule as in-place NumPy ufuncs (`out=`) over one flat buffer "
         "with preallocated state."),
        ("softmax-ce-", "Softmax + cross-entropy, value and gradient",
         "`tc.activations.softmax` + the fused loss value and dL/dZ that `train_step` "
         "uses vs the same in NumPy into preallocated arrays."),
    ]
    lines = ["## Kernels", ""]
    for prefix, title, note in kinds:
        names = sorted(g for g in groups if g.startswith(prefix))
        if not names:
            continue
        rows = []
        for name in names:
            engines = groups[name]
            ours, theirs = median(engines.get(REFERENCE)), median(engines.get("numpy"))
            rows.append([f"`{name}`", fmt_us(ours), fmt_us(theirs), fmt_ratio(ours, theirs)])
        lines += [f"### {title}", "", note, ""]
        lines += table(["group", "tinycore µs", "numpy µs", "tinycore / numpy"], rows) + [""]
    if peak_group:
        rows = []
        for engine, bench in sorted(groups[peak_group].items()):
            gflops = bench["extra_info"]["flops"] / median(bench) / 1e9
            rows.append([engine, fmt_us(median(bench)), f"{gflops:.1f}"])
        lines += [
            "### sgemm peak",
            "",
            "C = A·B, float32, n = 1024 (2n³ flops). NumPy's matmul is the peak used "
            "above; SciPy's `sgemm` is the BLAS build tinycore's kernels call; "
            "`torch.mm` (MKL) and `jax.jit(matmul)` (XLA) are the peers' own.",
            "",
        ]
        lines += table(["engine", "median µs", "GFLOP/s"], rows) + [""]
    return lines


def spread_section(groups: dict) -> list[str]:
    rows = []
    for name in sorted(groups, key=lambda g: (not g.startswith(("train-", "products-")),
                                              _train_key(g))):
        for engine, bench in sorted(groups[name].items()):
            stats = bench["stats"]
            rows.append([f"`{name}`", engine, fmt_us(stats["median"]), fmt_us(stats["min"]),
                         f"{100 * stats['iqr'] / stats['median']:.0f}%",
                         str(stats["rounds"]), str(stats.get("iterations", 1))])
    return (["## Spread", "",
             "Every measurement: median and minimum per call in µs, interquartile range "
             "as a fraction of the median, rounds × iterations per round.", ""]
            + table(["group", "engine", "median", "min", "IQR / median", "rounds",
                     "iterations"], rows, "llrrrrr") + [""])


def extra_run_section(path: Path) -> list[str]:
    """The training tables of another run (another thread count, say)."""
    groups, data = load(path)
    bench = data.get("machine_info", {}).get("tinycore_bench", {})
    peak, _ = sgemm_peak(groups)
    title = (f"## Another run: {bench.get('threads', '?')} thread(s) per engine "
             f"(`{path.name}`)")
    lines = train_section(groups, peak, title=title, intro=False, fastest=fastest_sgemm(groups))
    if not lines:
        return []
    lines[2:2] = [f"Same machine, JSON written {data.get('datetime', '?')}. Compare "
                  "the ratios within a run, not the times across runs. Command:", "",
                  "```", bench.get("command", "unknown"), "```", ""]
    return lines


def kept_section(path: Path) -> list[str]:
    """compare_builds.py's section of ``path``, markers included ([] if none)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = text.find(BUILDS_START), text.find(BUILDS_END)
    if start < 0 or end < start:
        return []
    return text[start:end + len(BUILDS_END)].splitlines() + [""]


def render(groups: dict, data: dict, argv: list[str], extra: list[Path] = (),
           kept: list[str] = (), n_runs: int = 1) -> str:
    peak, peak_group = sgemm_peak(groups)
    source = ("a pytest-benchmark run of `benchmarks/`" if n_runs == 1 else
              f"{n_runs} pytest-benchmark runs of `benchmarks/`, one after the other; "
              "per benchmark and engine, the run with the lowest median is reported")
    lines = [
        "# tinycore benchmarks",
        "",
        f"Written by `benchmarks/report.py` from {source} "
        "(see `benchmarks/README.md`). The machine is small (2 cores), shared and "
        "noisy: **quote the ratios, which compare engines measured under the same "
        "conditions, not the absolute times.**",
        "",
    ]
    lines += train_section(groups, peak, fastest=fastest_sgemm(groups))
    lines += products_section(groups, peak)
    lines += guard_section(groups)
    for path in extra:
        lines += extra_run_section(path)
    lines += kernel_section(groups, peak, peak_group)
    lines += kept
    lines += machine_section(data)
    lines += command_section(data, argv)
    lines += spread_section(groups)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="file written by --benchmark-json")
    parser.add_argument("output", type=Path, nargs="?", default=Path("BENCHMARKS.md"),
                        help="markdown file to write (default BENCHMARKS.md)")
    parser.add_argument("--best-of", type=Path, action="append", default=[], metavar="JSON",
                        help="another run of the same command; per benchmark and "
                             "engine the lowest median counts; repeatable")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="JSON",
                        help="another run (e.g. another thread count) whose training "
                             "tables are added; repeatable")
    args = parser.parse_args(argv[1:])
    groups, data = load(args.json)
    if not groups:
        parser.error(f"{args.json} holds no benchmark (was it run with --benchmark-disable?)")
    if args.best_of:
        groups = best_of([groups] + [load(path)[0] for path in args.best_of])
    text = render(groups, data, argv, args.also, kept_section(args.output),
                  n_runs=1 + len(args.best_of))
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(groups)} groups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
