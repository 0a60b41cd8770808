"""The morning run (``make bench-daily``, issue 25): 24 sleeves on price files, a new run each day.

bench_scale's 24-sleeve manifest (:func:`bench_scale.scale_manifest`: 10-20 S&P 500 stocks
per sleeve, 2010-2021, 252/20, four risk profiles, a nested meta profile), each sleeve
reading its own CSV file (wide, date x symbol) written into the workdir. In one runs root,
through the canonical runner in a fresh process (private Ray cluster, every stage, the
report and the ledger), with the whole process tree's CPU sampled:

* **(c)** a full run, the runs root empty;
* **(a)** a new run (new run id) with nothing changed;
* **(b)** one trading day appended to every price file (the next row of skfolio's data),
  then a new run;
* **(d)** the pure-compute reference (``bench/reference.py --tree``) on the files of (c).

Wall and CPU of each, the ratios (a)/(c), (b)/(c), (c)/(d), and the walk-forward window
fits each run did (:func:`window_fits`). Then the fixed cost of a tiny run (two sleeves of
two stocks on three years), phase by phase, as shares of that run. A table goes between the
``bench-daily`` markers of docs/performance.md.

    python bench/bench_daily.py [--sleeves 24] [--no-write] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_overhead import breakdown
from bench_scale import run_sampled, scale_manifest
from common import PROJECT, PYTHON, bench_env, cores, machine, write_block, write_json

BENCH = Path(__file__).resolve().parent
DOC = PROJECT / "docs" / "performance.md"
#: Targets of issue 25: (a) and (b) as shares of (c), (c) as a multiple of (d).
TARGET_NOOP, TARGET_APPEND, TARGET_FULL = 0.10, 0.15, 1.3
FIRST_DAY, LAST_DAY = "2010-01-01", "2021-12-31"


def price_files(manifest: dict, workdir: Path) -> dict:
    """Write every atomic sleeve's prices to its own CSV file; return the manifest reading them.

    Each file holds the sleeve's symbols on [FIRST_DAY, LAST_DAY] (wide: a ``date`` column,
    one column per symbol), as skfolio's embedded data has them.
    """
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset()
    out = json.loads(json.dumps(manifest))
    data = out["defaults"].pop("data")
    (workdir / "prices").mkdir(parents=True, exist_ok=True)
    for name, profile in out["profiles"].items():
        if "universe" not in profile:
            continue
        path = workdir / "prices" / f"{name}.csv"
        frame = prices.loc[data["start"] : data["end"], profile["universe"]["symbols"]]
        frame.index.name = "date"
        frame.to_csv(path)
        profile["data"] = {"source": "table", "path": str(path)}
    return out


def append_day(workdir: Path) -> str:
    """Append the next trading day of skfolio's data to every price file (earlier bytes unchanged); return it."""
    import pandas as pd
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset()
    day = None
    for path in sorted((workdir / "prices").glob("*.csv")):
        frame = pd.read_csv(path, index_col="date", parse_dates=["date"])
        later = prices.loc[prices.index > frame.index[-1], list(frame.columns)]
        row = later.iloc[:1]
        row.index.name = "date"
        with open(path, "a") as fh:
            row.to_csv(fh, header=False)
        day = str(row.index[0].date())
    return day


def window_fits(run_dir: Path, started: float) -> dict:
    """The walk-forward window fits of the run that started at ``started``, from its ledger.

    Each ``sleeve`` and ``meta_optimize`` entry the run computed carries its window counts
    (``params.windows``: ``fitted``, and ``reused`` from the window store); an entry the node
    store stood in for (``params.reused``) fitted nothing. Returns ``fits`` (windows fitted,
    sleeves and meta levels), ``store`` (windows taken from the window store), ``sleeves``
    (computed) and ``reused`` (sleeves taken whole from an earlier run).
    """
    fits = store = computed = reused = 0
    for line in (run_dir / "audit.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") != "stage" or r.get("outcome") != "success" or not r.get("stage", "").startswith(("sleeve", "meta_optimize")):
            continue
        if datetime.fromisoformat(r["time"]).timestamp() < started:
            continue
        params = r.get("params") or {}
        if "reused" in params:
            reused += r["stage"] == "sleeve"
            continue
        counts = params.get("windows") or {}
        fits += int(counts.get("fitted", 0))
        store += int(counts.get("reused", 0))
        computed += r["stage"] == "sleeve"
    return {"fits": fits, "store": store, "sleeves": computed, "reused": reused}


def report_stages(run_dir: Path, started: float) -> dict:
    """The report stages of the run that started at ``started``: seconds in all, and how their figures came."""
    seconds, figures = 0.0, []
    for line in (run_dir / "audit.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "stage" and r.get("stage") == "report":
            if datetime.fromisoformat(r["time"]).timestamp() >= started:
                seconds += r["duration_s"]
                figures.append(r.get("params", {}).get("figures", "drawn"))
    return {"seconds": seconds, "figures": "/".join(sorted(set(figures))) or "-", "count": len(figures)}


def pipeline(manifest: Path, run_id: str, runs_root: Path, n_cores: int) -> dict:
    """One run through bench/run_pipeline.py, its whole tree sampled: wall, CPU, report, fits, breakdown."""
    wall, cpu, stdout = run_sampled([PYTHON, str(BENCH / "run_pipeline.py"), "--manifest", str(manifest),
                                     "--profile", "scale", "--run-id", run_id, "--runs-root", str(runs_root),
                                     "--cores", str(n_cores), "--reuse"], bench_env())  # fmt: skip
    report = json.loads(stdout.strip().splitlines()[-1])
    run_dir = Path(report["run_dir"])
    rules = [j["rule"] for j in report["jobs"]]
    try:
        parts = breakdown(report, n_cores)
    except (KeyError, ValueError):  # a run that computed no sleeve or no meta node has no such phase
        parts = None
    return {"wall": wall, "cpu": sum(cpu.values()), "report": report, "jobs": len(rules),
            "sleeve_jobs": rules.count("sleeve"), "fits": window_fits(run_dir, report["started"]),
            "reports": report_stages(run_dir, report["started"]), "breakdown": parts}  # fmt: skip


def tiny_fixed_cost(workdir: Path, n_cores: int) -> dict:
    """A tiny run (two sleeves of two stocks, three years): where its wall time goes, phase by phase (seconds)."""
    manifest = scale_manifest(4, start="2017-01-01", end="2019-12-31")
    manifest["profiles"] = {
        "sleeve0": {"universe": {"symbols": ["AAPL", "MSFT"]}},
        "sleeve1": {"universe": {"symbols": ["JNJ", "KO"]}},
        "scale": {"sleeves": [{"id": "s0", "profile": "sleeve0"}, {"id": "s1", "profile": "sleeve1"}]},
    }
    path = write_json(workdir / "tiny" / "manifest.json", price_files(manifest, workdir / "tiny"))
    out = pipeline(path, "tiny", workdir / "tiny" / "runs", n_cores)
    report, run_dir = out["report"], Path(out["report"]["run_dir"])
    spans: dict[str, list[float]] = {}  # phase -> [first start, last end] (its stages overlap)
    for line in (run_dir / "audit.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "stage":
            end = datetime.fromisoformat(r["time"]).timestamp()
            phase = {"sleeve": "sleeves", "report": "report", "risk": "report"}.get(r["stage"], "meta")
            span = spans.setdefault(phase, [end - r["duration_s"], end])
            span[0], span[1] = min(span[0], end - r["duration_s"]), max(span[1], end)
    first = min(a for a, _ in spans.values())
    stages = {phase: b - a for phase, (a, b) in spans.items()}
    total = out["wall"]
    return {
        "wall": total,
        "cpu": out["cpu"],
        # interpreter start to the runner's first line: Python, the project's and Snakemake's imports
        "imports": report["import_s"],
        # the runner's start to the first stage: Snakefile parse, DAG, claim, onstart
        "snakemake_start": first - report["started"] - report["import_s"],
        "ray_head_start": report.get("ray_head_start_s") or 0.0,
        "ray_head_stop": report.get("ray_head_stop_s") or 0.0,
        "report": stages.get("report", 0.0),
        "sleeves": stages.get("sleeves", 0.0),
        "meta": stages.get("meta", 0.0),
        "after_last_stage": report["ended"] - max(
            datetime.fromisoformat(json.loads(x)["time"]).timestamp()
            for x in (run_dir / "audit.jsonl").read_text().splitlines() if '"kind":"stage"' in x
        ),  # fmt: skip
        "process_exit": total - (report["ended"] - report["started"]),
    }


def measure(workdir: Path, n: int, n_cores: int) -> dict:
    manifest = write_json(workdir / "manifest.json", price_files(scale_manifest(n), workdir))
    runs_root = workdir / "runs"
    rows = {}
    print(f"  (c) full run, {n} sleeves, empty runs root ...", file=sys.stderr, flush=True)
    rows["c"] = pipeline(manifest, "c-full", runs_root, n_cores)
    print("  (a) new run, nothing changed ...", file=sys.stderr, flush=True)
    rows["a"] = pipeline(manifest, "a-unchanged", runs_root, n_cores)
    day = append_day(workdir)
    print(f"  (b) new run, {day} appended to every price file ...", file=sys.stderr, flush=True)
    rows["b"] = pipeline(manifest, "b-appended", runs_root, n_cores)
    # The reference on the files of (c): the day appended in (b) taken off again.
    for path in (workdir / "prices").glob("*.csv"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]))
    print("  (d) pure-compute reference ...", file=sys.stderr, flush=True)
    ref_wall, ref_cpu, ref_out = run_sampled([PYTHON, str(BENCH / "reference.py"), "--manifest", str(manifest),
                                              "--profile", "scale", "--cores", str(n_cores), "--tree"], bench_env())  # fmt: skip
    ref = json.loads(ref_out.strip().splitlines()[-1])
    windows_c = rows["c"]["fits"]["fits"]
    rows["d"] = {"wall": ref_wall, "cpu": sum(ref_cpu.values()), "jobs": None, "sleeve_jobs": None, "reports": None,
                 "fits": {"fits": windows_c, "store": 0, "sleeves": ref["n_atomic"], "reused": 0}}  # fmt: skip
    for key, r in rows.items():
        print(f"  ({key}) wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, window fits {r['fits']['fits']}",
              file=sys.stderr, flush=True)  # fmt: skip
    print("  tiny run (fixed costs) ...", file=sys.stderr, flush=True)
    return {"rows": rows, "day": day, "tiny": tiny_fixed_cost(workdir, n_cores)}


def _reports(reports: dict | None) -> str:
    return "-" if not reports else f"{reports['seconds']:.1f} ({reports['count']} nodes, {reports['figures']})"


def _verdict(value: float, target: float) -> str:
    return "pass" if value <= target else "**FAIL**"


def table(result: dict, n: int, before: dict, after: dict, total: float) -> str:
    rows, tiny = result["rows"], result["tiny"]
    c, d = rows["c"]["wall"], rows["d"]["wall"]
    labels = {
        "c": "(c) full run, empty runs root",
        "a": "(a) new run, nothing changed",
        "b": f"(b) new run, one day ({result['day']}) appended to every price file",
        "d": "(d) pure-compute reference (`bench/reference.py --tree`)",
    }
    ratios = {"a": (rows["a"]["wall"] / c, f"(a)/(c) <= {TARGET_NOOP:g}", TARGET_NOOP),
              "b": (rows["b"]["wall"] / c, f"(b)/(c) <= {TARGET_APPEND:g}", TARGET_APPEND),
              "c": (c / d, f"(c)/(d) <= {TARGET_FULL:g}", TARGET_FULL)}  # fmt: skip
    lines = [
        f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M')} by `make bench-daily` ({total:.0f} s), {cores()} cores, "
        f"{n} sleeves on CSV price files (bench_scale's manifest, 2010-2021), one runs root, each run a new run id "
        f"through the runner with its private Ray cluster. Load before: `{before['uptime']}`; after: "
        f"`{after['uptime']}`. The machine is shared with other jobs: read the ratios, taken in one run.",
        "",
        "| run | wall s | CPU s (whole tree) | jobs | sleeve jobs | windows fitted (from the window store; sleeves computed / reused whole) "
        "| report stages s (figures) | ratio | target |",
        "|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for key in ("c", "a", "b", "d"):
        r = rows[key]
        f = r["fits"]
        ratio, target, limit = ratios.get(key, (None, "", None))
        shown = "" if ratio is None else f"{ratio:.3f}"
        verdict = "" if ratio is None else f"{target}: {_verdict(ratio, limit)}"
        lines.append(
            f"| {labels[key]} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['jobs'] if r['jobs'] is not None else '-'} | "
            f"{r['sleeve_jobs'] if r['sleeve_jobs'] is not None else '-'} | {f['fits']} ({f['store']}; {f['sleeves']} / {f['reused']}) | {_reports(r['reports'])} | {shown} | {verdict} |"
        )
    parts = rows["c"]["breakdown"]
    if parts:
        lines += [
            "",
            f"Where (c) goes (from its ledger): start-up to the first stage {parts['startup']:.1f} s (the private "
            f"head's start {parts['ray_start']:.1f} s is inside the sleeve phase), sleeve phase {parts['sleeves']:.1f} s "
            f"(sleeve compute {parts['sleeve_compute']:.1f} s over {cores()} cores = {parts['sleeve_ideal']:.1f} s), "
            f"meta layer {parts['meta']:.1f} s, report {parts['report']:.1f} s, last stage to the runner's return "
            f"{parts['teardown']:.1f} s (Ray's stop {rows['c']['report'].get('ray_head_stop_s') or 0:.1f} s).",
        ]
    t = tiny["wall"]
    share = {k: 100 * tiny[k] / t for k in tiny if k not in {"wall", "cpu"}}
    lines += [
        "",
        f"The fixed cost of a tiny run (two sleeves of two stocks, 2017-2019, a new run id): {t:.1f} s wall, "
        f"{tiny['cpu']:.1f} s CPU. The runner's imports {tiny['imports']:.1f} s ({share['imports']:.0f} %); "
        f"Snakemake's start (Snakefile, DAG, claim, onstart) {tiny['snakemake_start']:.1f} s "
        f"({share['snakemake_start']:.0f} %); the sleeves {tiny['sleeves']:.1f} s ({share['sleeves']:.0f} %), of which "
        f"the private Ray head's start {tiny['ray_head_start']:.1f} s ({share['ray_head_start']:.0f} %); the meta "
        f"stages {tiny['meta']:.1f} s ({share['meta']:.0f} %); the report and risk {tiny['report']:.1f} s "
        f"({share['report']:.0f} %); the last stage to the runner's return (the verdict over the ledger, Ray's stop "
        f"{tiny['ray_head_stop']:.1f} s = {share['ray_head_stop']:.0f} %) {tiny['after_last_stage']:.1f} s "
        f"({share['after_last_stage']:.0f} %); the interpreter's start and the process's exit {tiny['process_exit']:.1f} s "
        f"({share['process_exit']:.0f} %). Each phase is the span from its first stage's start to its last one's "
        "end (the meta span includes the resolved manifest's record): phases overlap, the shares need not add up "
        "to 100 %.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sleeves", type=int, default=24)
    p.add_argument("--cores", type=int, default=cores())
    p.add_argument("--workdir", type=Path)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    before = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-daily-") as tmp:
        workdir = args.workdir or Path(tmp)
        result = measure(workdir, args.sleeves, args.cores)
    total = time.perf_counter() - t0
    block = table(result, args.sleeves, before, machine(), total)
    print(block, file=sys.stderr)
    if not args.no_write:
        write_block(DOC, "bench-daily", block, section="## The morning run (issue 25)")
        print(f"wrote {DOC.relative_to(PROJECT)}", file=sys.stderr)
    rows = result["rows"]
    summary = {k: {"wall": r["wall"], "cpu": r["cpu"], "fits": r["fits"]} for k, r in rows.items()}
    print(json.dumps({"rows": summary, "tiny": result["tiny"], "day": result["day"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
