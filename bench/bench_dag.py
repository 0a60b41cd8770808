"""Items 5 and 7: CLI dry-run of generated manifests of N sleeves x 4 risk profiles, its growth and peak RSS.

Each size runs ``snakemake -s workflow/Snakefile --config profile=big manifest=M run_id=x
runs_root=D -n -q`` in a fresh process (wall, CPU and peak RSS from ``wait4``); the same
sizes run through bench/floor/Snakefile, the same DAG shape without the project's code
(Snakemake's own floor). Prints the figures as JSON (see common.emit).

    python bench/bench_dag.py [--sizes 100,1000,3000,10000] [--floor-sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import SNAKEMAKE, Figure, bench_env, dag_manifest, emit, run_timed, write_json

#: Targets of item 5: wall seconds of the dry run per number of sleeves.
TARGETS = {1000: 3.0, 10000: 15.0}


def dry_run(n: int, workdir: Path) -> dict:
    """CLI dry run of the pipeline for a generated manifest of ``n`` sleeves: wall, CPU, RSS, jobs."""
    manifest = write_json(workdir / f"m{n}.json", dag_manifest(n))
    cmd = [SNAKEMAKE, "-s", "workflow/Snakefile", "-n", "-q", "--config", "profile=big", f"manifest={manifest}",
           "run_id=x", f"runs_root={workdir / 'runs'}"]
    t = run_timed(cmd, env=bench_env())
    return {"sleeves": n, "wall": t.wall, "cpu": t.cpu, "rss_mb": t.max_rss_mb}


def floor_run(n: int, workdir: Path) -> dict:
    """The same dry run of bench/floor/Snakefile (no project code)."""
    cmd = [SNAKEMAKE, "-s", "bench/floor/Snakefile", "-n", "-q", "--cores", "2", "--config", f"sleeves={n}",
           f"root={workdir / 'floor' / 'x'}"]
    t = run_timed(cmd, env=bench_env())
    return {"sleeves": n, "wall": t.wall, "cpu": t.cpu, "rss_mb": t.max_rss_mb}


def slope_ms(points: list[dict], key: str) -> tuple[float, float]:
    """Least-squares line through (sleeves, key): (ms per sleeve, intercept in seconds)."""
    x = np.array([p["sleeves"] for p in points], dtype=float)
    y = np.array([p[key] for p in points], dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    a, b = np.polyfit(x, y, 1)
    return 1000 * a, b


def measure(workdir: Path, sizes: list[int], floor_sizes: list[int]) -> list[Figure]:
    """Run the dry runs; return item 5 (per size, growth) and item 7 (peak RSS) figures."""
    points = [dry_run(n, workdir) for n in sizes]
    floor = {n: floor_run(n, workdir) for n in floor_sizes}
    figures = []
    for p in points:
        f = floor.get(p["sleeves"])
        vs_floor = f"; Snakemake floor (same shape, no project code) {f['wall']:.2f} s wall, {f['cpu']:.2f} s CPU" if f else ""
        figures.append(
            Figure("5", f"CLI dry-run, {p['sleeves']:,} sleeves x 4 profiles", p["wall"], TARGETS.get(p["sleeves"]), "s",
                   note=f"CPU {p['cpu']:.2f} s{vs_floor}", extra={**p, "floor": f})
        )
    ms, intercept = slope_ms(points, "wall")
    ms_cpu, _ = slope_ms(points, "cpu")
    floor_pts = list(floor.values())
    fms, fintercept = slope_ms(floor_pts, "wall")
    fms_cpu, _ = slope_ms(floor_pts, "cpu")
    big = max(points, key=lambda p: p["sleeves"])
    figures.append(
        Figure("5", "DAG growth per sleeve (least squares over the sizes)", ms, None, "ms/sleeve",
               note=f"wall {intercept:.2f} s + {ms:.3f} ms x N (CPU {ms_cpu:.3f} ms/sleeve); Snakemake floor "
                    f"{fintercept:.2f} s + {fms:.3f} ms x N (CPU {fms_cpu:.3f} ms/sleeve)",
               extra={"points": points, "floor": floor_pts})
    )
    for p in points:
        figures.append(Figure("7", f"peak RSS, CLI dry-run {p['sleeves']:,} sleeves", p["rss_mb"], None, "MiB",
                              note=f"{1024 * p['rss_mb'] / p['sleeves']:.1f} KiB per sleeve" if p is big else ""))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000,3000,10000")
    p.add_argument("--floor-sizes", default="1000,10000")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    floor_sizes = [int(s) for s in args.floor_sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        emit(measure(args.workdir or Path(tmp), sizes, floor_sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
