"""Ray against sequential mode: K CPU-bound sleeves through the canonical runner, both ways.

For K = 4 and 8 sleeves (five S&P 500 stocks each, 12 years of daily data, walk-forward
252/20, four risk profiles: a few seconds of real work per sleeve), one invocation runs the
same meta profile in sequential mode (``ray=False``: sleeves are threads of this process,
serialized by the GIL) and on a private Ray cluster, in-process, on this machine's cores.

The sleeve phase runs from the first sleeve job's start to the last one's end (audit
ledger). In Ray mode it includes the fixed cost of starting the head and connecting
(``Cluster.start_s``, logged when the cluster is up), reported apart; the speedup is the
sequential sleeve phase over the Ray sleeve phase without that fixed cost (target on 2
cores: >= 1.8 for K = 8). End-to-end wall times of both runs are printed too.

    python bench/bench_ray.py [--sleeves 4,8] [--start 2008-01-01] [--end 2019-12-31] [--workdir DIR]

Prints a text table on stderr and the figures as one JSON line on stdout (see common.emit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import (
    PROJECT,
    ClusterStart,
    Figure,
    cores,
    cpu_seconds,
    emit,
    machine,
    realistic_manifest,
)


def _sleeve_phase(run_dir: Path) -> tuple[float, list[float]]:
    """Seconds from the first sleeve job's start to the last one's end, and each job's duration."""
    starts, ends, durations = [], [], []
    for line in (run_dir / "audit.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("stage") == "sleeve" and entry.get("outcome") == "success":
            end = datetime.fromisoformat(entry["time"]).timestamp()
            starts.append(end - entry["duration_s"])
            ends.append(end)
            durations.append(entry["duration_s"])
    return max(ends) - min(starts), durations


def _task_seconds(run_dir: Path) -> list[float]:
    """Seconds each sleeve's computation took where it ran (provenance ``duration_s``)."""
    return [
        sum(t["duration_s"] for t in json.loads(p.read_text())["tasks"].values())
        for p in sorted(run_dir.glob("sleeves/*/provenance.json"))
    ]


def run_mode(manifest: Path, runs_root: Path, k: int, ray: bool) -> dict:
    """Run meta profile ``bench`` once; return wall, sleeve phase, fixed cost and CPU use."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    with ClusterStart() as cluster:
        result = MetaPipeline(
            "bench",
            manifest=manifest,
            run_id=f"k{k}-{'ray' if ray else 'seq'}",
            runs_root=runs_root,
            cores=cores(),
            ray=ray,
            reuse=False,  # each mode computes: the second would reuse the first's sleeves
        ).execute()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    phase, jobs = _sleeve_phase(result.run_dir)
    head = cluster.start_s or 0.0  # start-up of the private cluster, its connection included
    connect = cluster.connect_s or 0.0
    tasks = _task_seconds(result.run_dir)
    return {
        "k": k,
        "mode": "ray" if ray else "sequential",
        "wall_s": wall,
        "cpu_s": cpu,
        "sleeve_phase_s": phase,
        "head_start_s": head,
        "connect_s": connect,
        "phase_without_fixed_s": phase - head - connect,
        "mean_task_s": sum(tasks) / len(tasks),
        "mean_job_s": sum(jobs) / len(jobs),
        "run_dir": str(result.run_dir),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sleeves", default="4,8", help="comma-separated sleeve counts (default: %(default)s)"
    )
    p.add_argument("--start", default="2008-01-01")
    p.add_argument("--end", default="2019-12-31")
    p.add_argument("--workdir", help="keep manifests and runs here (default: a temp dir, removed)")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.sleeves.split(",")]
    os.chdir(PROJECT)  # the runner's workdir: config/config.yaml, .snakemake
    os.environ.pop("RAY_ADDRESS", None)  # a private cluster per run
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import tradingview_scraper.sleeve  # noqa: F401  (imports paid before timing, as Ray's warm driver)

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        before = machine()
        rows = []
        for k in ks:
            manifest = work / f"manifest_k{k}.json"
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps(realistic_manifest(k, start=args.start, end=args.end)))
            for ray in (False, True):
                rows.append(run_mode(manifest, work / "runs", k, ray))
        after = machine()

    print(
        f"machine: {before['nproc']} cores, load before {before['uptime']}, after {after['uptime']}",
        file=sys.stderr,
    )
    print(f"{'K':>3} {'mode':<11} {'wall s':>7} {'CPU s':>7} {'phase s':>8} {'head s':>7} {'conn s':>7} "
          f"{'phase-fixed':>11} {'task s':>7}", file=sys.stderr)  # fmt: skip
    for r in rows:
        print(f"{r['k']:>3} {r['mode']:<11} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['sleeve_phase_s']:8.1f} "
              f"{r['head_start_s']:7.2f} {r['connect_s']:7.2f} {r['phase_without_fixed_s']:11.1f} "
              f"{r['mean_task_s']:7.2f}", file=sys.stderr)  # fmt: skip
    figures = []
    for k in ks:
        seq, ray = (
            next(r for r in rows if r["k"] == k and r["mode"] == m) for m in ("sequential", "ray")
        )
        extra = {"sequential": seq, "ray": ray, "machine_before": before, "machine_after": after}
        figures += [
            Figure("ray", f"speedup_k{k}", seq["sleeve_phase_s"] / ray["phase_without_fixed_s"],
                   1.8 if k == 8 else None, "x", better="above",
                   note="sequential sleeve phase / Ray sleeve phase without head start + connect", extra=extra),
            Figure("ray", f"speedup_k{k}_with_fixed_cost", seq["sleeve_phase_s"] / ray["sleeve_phase_s"], None, "x"),
            Figure("ray", f"end_to_end_k{k}", seq["wall_s"] / ray["wall_s"], None, "x",
                   note="whole runs: meta layer and report included"),
            Figure("ray", f"head_start_k{k}", ray["head_start_s"], None, "s"),
            Figure("ray", f"connect_k{k}", ray["connect_s"], None, "s"),
        ]  # fmt: skip
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
