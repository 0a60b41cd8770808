"""Items 1, 3, 4: overhead ratio against the pure-compute reference, no-op rerun, incremental rerun.

One realistic meta profile (K sleeves of five S&P 500 stocks, 12 years of daily data, four
risk profiles) is run through the canonical runner with Ray (fresh run id) and through
bench/reference.py; then the same run id is rerun with nothing changed (runner in-process,
plain ``snakemake`` CLI, ``scripts/run_meta_pipeline.py``) and with one sleeve's commission
changed. Prints the figures as JSON (see common.emit).

    python bench/bench_overhead.py [--sleeves 4] [--start 2008-01-01] [--end 2019-12-31] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from common import (
    PYTHON,
    SNAKEMAKE,
    Figure,
    bench_env,
    cores,
    emit,
    loopback_cluster,
    realistic_manifest,
    run_timed,
    write_json,
)

BENCH = Path(__file__).resolve().parent
META_RULES = {"meta_returns", "meta_optimize", "meta_optimize_hierarchical", "flatten", "node_returns", "risk", "report"}
#: Rules that may rerun besides the changed sleeve and the meta layer: the run record and the target rule.
RECORD_RULES = {"resolved_manifest", "all"}
REPEATS = 3


def _runner(manifest: Path, run_id: str, runs_root: Path, n_cores: int, env: dict | None = None) -> tuple[float, dict]:
    """Run the pipeline through the runner in a fresh process: (process wall, its JSON report)."""
    cmd = [PYTHON, str(BENCH / "run_pipeline.py"), "--manifest", str(manifest), "--profile", "bench",
           "--run-id", run_id, "--runs-root", str(runs_root), "--cores", str(n_cores)]
    timed = run_timed(cmd, env={**bench_env(), **(env or {})})
    return timed.wall, json.loads(timed.stdout.strip().splitlines()[-1])


def breakdown(report: dict, n_cores: int) -> dict:
    """Where the wall time of a full run went, from the run's audit ledger (seconds).

    ``startup``: process start to the first stage (interpreter, imports, Snakefile, DAG);
    ``sleeves``: until the last sleeve was written, including ``ray_start`` (the private head's
    start-up and the driver's connection); ``sleeve_compute``:
    the sleeves' compute inside the workers, summed, and ``sleeve_ideal`` that divided by the
    cores; ``meta``: last sleeve to the meta node's returns (meta returns, optimize, flatten);
    ``report``; ``teardown``: report written to the runner's return (Ray shutdown);
    ``driver_cpu``: CPU seconds of the driver process (all its threads), the work that
    competes with the workers for the cores.
    """
    run_dir = Path(report["run_dir"])
    records = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines() if line.strip()]
    stages = [r for r in records if r.get("kind") == "stage"]
    for r in stages:
        r["end"] = datetime.fromisoformat(r["time"]).timestamp()  # a ledger entry is written when its stage ends
    stages = [r for r in stages if r["end"] >= report["started"]]  # this run's, not an earlier run's of the id
    first = min(r["end"] - r["duration_s"] for r in stages)
    end: dict[str, list[float]] = {}
    for r in stages:
        end.setdefault(r["stage"], []).append(r["end"])
    compute = sum(
        sum(t["duration_s"] for t in json.loads((run_dir / r["node"] / "provenance.json").read_text())["tasks"].values())
        for r in stages
        if r["stage"] == "sleeve"
    )
    last_sleeve = max(end["sleeve"])
    meta_done = max(end["node_returns"])
    report_done = max(end["report"])
    return {
        "startup": first - report["started"],
        "ray_start": (report.get("ray_head_start_s") or 0.0) + (report.get("ray_connect_s") or 0.0),
        "sleeves": last_sleeve - first,
        "sleeve_compute": compute,
        "sleeve_ideal": compute / n_cores,
        "meta": meta_done - last_sleeve,
        "report": report_done - meta_done,
        "teardown": report["ended"] - report_done,
        "driver_cpu": report.get("driver_cpu_s", float("nan")),
    }


def measure(workdir: Path, n_sleeves: int, start: str, end: str, n_cores: int) -> list[Figure]:
    """Run items 1, 3 and 4 in ``workdir``; return their figures."""
    manifest = write_json(workdir / "manifest.json", realistic_manifest(n_sleeves, start=start, end=end))
    runs_root = workdir / "runs"
    run_id = "overhead-" + datetime.now().strftime("%H%M%S")

    ref = run_timed([PYTHON, str(BENCH / "reference.py"), "--manifest", str(manifest), "--profile", "bench",
                     "--cores", str(n_cores)], env=bench_env())
    ref_report = json.loads(ref.stdout.strip().splitlines()[-1])
    # The reference process then times the incremental recomputation: not part of its full run.
    ref.wall -= ref_report["incremental_wall"]
    full_wall, full = _runner(manifest, run_id, runs_root, n_cores)
    parts = breakdown(full, n_cores)
    ratio = full_wall / ref.wall
    figures = [
        Figure("1", "overhead ratio (pipeline / pure-compute reference)", ratio, 1.15, "x",
               note=f"pipeline {full_wall:.1f} s (runner, Ray, fresh run id) / reference {ref.wall:.1f} s "
                    f"({n_sleeves} sleeves x {len(full['jobs'])} jobs, {start}..{end})",
               extra={"pipeline_wall": full_wall, "reference_wall": ref.wall, "reference": ref_report,
                      "breakdown": parts, "pipeline_runner_s": full["runner_s"],
                      "pipeline_without_report": full_wall - parts["report"]}),
    ]

    # The same run on a cluster that is already up (fresh, so its workers are as cold as a
    # private head's): what remains is the orchestration without the per-run head.
    with loopback_cluster(n_cores) as cluster_env:
        ext_wall, ext = _runner(manifest, run_id + "-ext", runs_root, n_cores, env=cluster_env)
    figures.append(
        Figure("1", "overhead ratio on an already running cluster (--ray-address)", ext_wall / ref.wall, 1.15, "x",
               note=f"pipeline {ext_wall:.1f} s / reference {ref.wall:.1f} s; the private head's start and stop "
                    f"cost the full run {full_wall - ext_wall:.1f} s",
               extra={"pipeline_wall": ext_wall, "breakdown": breakdown(ext, n_cores)}))

    # 3. No-op reruns of the same run id.
    noop_runner, noop_cli, noop_script, jobs_seen = [], [], [], set()
    config = ["profile=bench", f"manifest={manifest}", f"run_id={run_id}", f"runs_root={runs_root}"]
    script = [PYTHON, "scripts/run_meta_pipeline.py", "--profile", "bench", "--manifest", str(manifest),
              "--run-id", run_id, "--runs-root", str(runs_root), "--cores", str(n_cores)]
    for _ in range(REPEATS):
        _, rerun = _runner(manifest, run_id, runs_root, n_cores)
        noop_runner.append(rerun["runner_s"])
        jobs_seen |= {j["rule"] for j in rerun["jobs"]}
        noop_cli.append(run_timed([SNAKEMAKE, "-s", "workflow/Snakefile", "-q", "--cores", str(n_cores),
                                   "--config", *config], env=bench_env()).wall)
        noop_script.append(run_timed(script, env=bench_env()).wall)
    note = "no job ran" if not jobs_seen else f"jobs ran: {sorted(jobs_seen)}"
    for label, walls in (("runner in-process", noop_runner), ("snakemake CLI", noop_cli),
                         ("scripts/run_meta_pipeline.py", noop_script)):
        med = statistics.median(walls)
        figures.append(Figure("3", f"no-op rerun, {label}", med, 2.0, "s",
                              note=f"median of {REPEATS}: {', '.join(f'{w:.2f}' for w in walls)}; {note}",
                              extra={"walls": walls}))
        figures.append(Figure("3", f"no-op rerun, {label}, share of a full run", 100 * med / full_wall, 5.0, "%"))
    if jobs_seen:
        figures[-1].note = f"FAILED: {note}"
    # Snakemake's own no-op rerun of the same DAG shape without the project's code: the
    # floor under the plain snakemake command's figure.
    floor_cfg = ["--config", f"sleeves={n_sleeves}", f"root={workdir / 'floor'}"]
    floor_cmd = [SNAKEMAKE, "-s", "bench/floor/Snakefile", "-q", "--cores", str(n_cores), "--force-use-threads",
                 "--nolock", *floor_cfg]  # the settings of workflow/profiles/default
    run_timed(floor_cmd, env=bench_env())
    floor = statistics.median(run_timed(floor_cmd, env=bench_env()).wall for _ in range(REPEATS))
    figures.append(Figure("3", "no-op rerun, snakemake CLI / Snakemake's own no-op of the DAG (bench/floor)",
                          statistics.median(noop_cli) / floor, None, "x",
                          note=f"Snakemake alone: {floor:.2f} s (median of {REPEATS}), "
                               f"{100 * floor / full_wall:.1f} % of the full run",
                          extra={"floor_wall": floor}))

    # 4. Incremental: one sleeve's commission changes.
    changed = json.loads(manifest.read_text())
    changed["profiles"]["sleeve1"].setdefault("backtest", {})["commission"] = 0.001
    write_json(manifest, changed)
    inc_wall, inc = _runner(manifest, run_id, runs_root, n_cores)
    rules = [j["rule"] for j in inc["jobs"]]
    sleeves = sorted(j["wildcards"].get("node", "").rsplit("/", 1)[-1] for j in inc["jobs"] if j["rule"] == "sleeve")
    others = sorted(set(rules) - META_RULES - RECORD_RULES - {"sleeve"})
    only_that = sleeves == ["s1"] and not others and {"meta_returns", "flatten", "report"} <= set(rules)
    fig = Figure("4", f"incremental rerun (1 of {n_sleeves} sleeves changed) / full run", inc_wall / full_wall,
                 1.3 / n_sleeves, "x",
                 note=f"{inc_wall:.1f} s / {full_wall:.1f} s; reran sleeves {sleeves} + {len(rules) - len(sleeves)} "
                      f"meta/record jobs" + ("" if only_that else f"; FAILED: unexpected jobs {others or sleeves}"),
                 extra={"wall": inc_wall, "jobs": rules, "breakdown": breakdown(inc, n_cores) if sleeves else None})
    if not only_that:
        fig.measured = float("inf")
    # Pure compute has a floor too: the rerun recomputes one sleeve (its risk profiles spread
    # over the cores) and then the whole meta layer, which the target 1.3/K leaves out. The
    # reference measures that floor: the same recomputation in a fresh pool.
    # (Its process start, imports and pool aside, counted as in the full reference.)
    ref_incremental = ref_report["incremental_wall"] + (ref.wall - ref_report["wall"])
    floor_ratio = ref_incremental / ref.wall
    figures += [
        fig,
        Figure("4", f"incremental rerun / full run, against the pure-compute floor {floor_ratio:.2f}",
               fig.measured / floor_ratio, 1.3, "x of floor",
               note=f"reference: one sleeve and the meta layer {ref_incremental:.1f} s / all "
                    f"{ref.wall:.1f} s; 1.3 x that floor is the target's slack over 1/K",
               extra={"floor_ratio": floor_ratio}),
    ]
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sleeves", type=int, default=4)
    p.add_argument("--start", default="2008-01-01")
    p.add_argument("--end", default="2019-12-31")
    p.add_argument("--cores", type=int, default=cores())
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        workdir = args.workdir or Path(tmp)
        emit(measure(workdir, args.sleeves, args.start, args.end, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
