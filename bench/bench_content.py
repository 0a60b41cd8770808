"""No-op reruns with the content checks: N sleeves, each on its own price file (table CSVs).

A rule's params carry the digest of every file it reads from outside the run (the price
files, a pinned run's artifacts, the book), so a no-op rerun stats each price file (and
hashes the ones whose stat differs from the ledger's record). For each size this runs the
pipeline once (``--no-ray``, one risk profile: the sleeves are cheap on purpose; above 50
sleeves one is computed and the others get copies of its artifacts, see
:func:`seed_sleeves`), then times
no-op reruns through the script and the plain ``snakemake`` command, the content digests
alone (stat against the ledger's record, and every file hashed), the code hashes alone, and
Snakemake's own no-op of the same DAG shape (bench/floor). Prints the figures as JSON.

    python bench/bench_content.py [--sizes 4,1000] [--cores 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import PROJECT, PYTHON, SNAKEMAKE, Figure, bench_env, cores, emit, run_timed, write_json

REPEATS = 3
#: Target of a no-op rerun through the script at 4 sleeves (seconds, on a quiet machine).
TARGET_4 = 2.0


def content_manifest(data_dir: Path, n: int, rows: int = 120) -> dict:
    """A meta profile ``content`` of ``n`` atomic sleeves, each its own profile reading its own CSV table."""
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2020-01-01", periods=rows, name="date")
    atomic = {}
    for i in range(n):
        path = data_dir / f"p{i:05d}.csv"
        values = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (rows, 2)), axis=0))
        pd.DataFrame(values, index=dates, columns=["AAA", "BBB"]).round(6).to_csv(path)
        atomic[f"t{i:05d}"] = {"data": {"source": "table", "path": str(path)}, "universe": {"symbols": ["AAA", "BBB"]}}
    return {
        "defaults": {
            "backtest": {"train_window": 40, "test_window": 20},
            "meta_allocation": {"min_weight": 0.0, "max_weight": 1.0},
            "profiles": ["equal_weight"],
        },
        "profiles": {**atomic, "content": {"sleeves": [{"id": f"s{i:05d}", "profile": f"t{i:05d}"} for i in range(n)]}},
    }


def _digests(run_dir: Path, files: list[Path]) -> tuple[float, float, float]:
    """Seconds to read the ledger's records (cold), to digest ``files`` against them (a stat each), and with every file hashed."""
    sys.path.insert(0, str(PROJECT))
    from tradingview_scraper import audit, deps

    t0 = time.perf_counter()
    known = audit.recorded_inputs(run_dir)
    ledger = time.perf_counter() - t0
    t0 = time.perf_counter()
    deps.content_digest(files, known)
    recorded = time.perf_counter() - t0
    t0 = time.perf_counter()
    deps.content_digest(files)
    return ledger, recorded, time.perf_counter() - t0


def seed_sleeves(manifest: Path, runs_root: Path, run_id: str, n: int, n_cores: int) -> None:
    """Compute sleeve ``s00000`` for real, then give every other sleeve a copy of its artifacts, recorded in the ledger.

    A no-op rerun reads the sleeves' artifacts and price files, never recomputes them, so
    what it costs does not depend on the numbers inside: copies make a run of ``n`` sleeves
    affordable on a small machine (computing them took about 12 s each on a loaded one).
    Each copy is recorded like a stage that wrote it (``audit.record_stage``, its price file
    as input), so the run verifies; the meta layer, the risk job and the report then run for
    real over all ``n`` sleeves.
    """
    sys.path.insert(0, str(PROJECT))
    from tradingview_scraper import audit
    from tradingview_scraper.layout import atomic_write_bytes

    run_dir = runs_root / run_id
    first = run_dir / "sleeves" / "s00000"
    run_timed([SNAKEMAKE, "-s", "workflow/Snakefile", "-q", "--cores", str(n_cores), str(first / "returns.parquet"),
               "--config", "profile=content", f"manifest={manifest}", f"run_id={run_id}", f"runs_root={runs_root}",
               "ray=false"], env=bench_env(), timeout=1800.0)  # fmt: skip
    plan = json.loads(manifest.read_text())["profiles"]
    files = sorted(p.name for p in first.iterdir() if p.is_file())
    for i in range(1, n):
        sleeve = run_dir / "sleeves" / f"s{i:05d}"
        outputs = [sleeve / name for name in files]
        for out in outputs:
            atomic_write_bytes(out, (first / out.name).read_bytes())
        prices = plan[f"t{i:05d}"]["data"]["path"]
        audit.record_stage(run_dir, stage="sleeve", node=sleeve, params={"profile": f"t{i:05d}", "seeded_from": "s00000"},
                           inputs=[prices], outputs=outputs, outcome="success")  # fmt: skip


def measure(workdir: Path, n: int, n_cores: int, seed_above: int = 50) -> list[Figure]:
    data = workdir / f"data{n}"
    data.mkdir(parents=True, exist_ok=True)
    manifest = write_json(workdir / f"content{n}.json", content_manifest(data, n))
    runs_root, run_id = workdir / "runs", f"content{n}"
    script = [PYTHON, "scripts/run_meta_pipeline.py", "--profile", "content", "--manifest", str(manifest), "--run-id",
              run_id, "--runs-root", str(runs_root), "--cores", str(n_cores), "--no-ray", "--quiet"]
    seeded = n > seed_above
    if seeded:
        seed_sleeves(manifest, runs_root, run_id, n, n_cores)
    full = run_timed(script, env=bench_env(), timeout=7200.0)
    sys.path.insert(0, str(PROJECT))
    from tradingview_scraper import audit

    seq = audit.last_seq(runs_root / run_id)
    noop_script = [run_timed(script, env=bench_env()).wall for _ in range(REPEATS)]
    cli = [SNAKEMAKE, "-s", "workflow/Snakefile", "-q", "--cores", str(n_cores), "--config", "profile=content",
           f"manifest={manifest}", f"run_id={run_id}", f"runs_root={runs_root}", "ray=false"]
    noop_cli = [run_timed(cli, env=bench_env()).wall for _ in range(REPEATS)]
    ran = "no job ran" if audit.last_seq(runs_root / run_id) == seq else "FAILED: jobs ran"
    ledger, recorded, hashed = _digests(runs_root / run_id, sorted(data.glob("*.csv")))
    code = run_timed([PYTHON, "-c", "import time; from tradingview_scraper import steps; t = time.process_time(); "
                      "[steps.code(name) for name in steps.STEPS]; print(time.process_time() - t)"], env=bench_env())
    floor_cmd = [SNAKEMAKE, "-s", "bench/floor/Snakefile", "-q", "--cores", str(n_cores), "--force-use-threads",
                 "--nolock", "--config", f"sleeves={n}", f"root={workdir / f'floor{n}'}"]
    run_timed(floor_cmd, env=bench_env(), timeout=3600.0)
    floor = statistics.median(run_timed(floor_cmd, env=bench_env()).wall for _ in range(REPEATS))
    med_script, med_cli = statistics.median(noop_script), statistics.median(noop_cli)
    walls = lambda xs: ", ".join(f"{w:.2f}" for w in xs)  # noqa: E731
    return [
        Figure("3", f"no-op rerun with content checks, {n} sleeves on their own price files, script", med_script,
               TARGET_4 if n == 4 else None, "s",
               note=f"median of {REPEATS}: {walls(noop_script)}; {ran}; "
                    + (f"sleeves seeded from one computed sleeve, meta layer and report {full.wall:.1f} s" if seeded else f"full run {full.wall:.1f} s"),
               extra={"walls": noop_script, "full_wall": full.wall}),
        Figure("3", f"no-op rerun with content checks, {n} sleeves, snakemake CLI", med_cli, None, "s",
               note=f"median of {REPEATS}: {walls(noop_cli)}; Snakemake's own no-op of the DAG shape {floor:.2f} s "
                    f"(ratio {med_cli / floor:.2f})",
               extra={"walls": noop_cli, "floor": floor}),
        Figure("3", f"content digests of {n} price files at parse time", recorded, None, "s",
               note=f"a stat each against the ledger's records (reading them, cold: {ledger:.3f} s, which the "
                    f"pre-DAG check does anyway); {hashed:.3f} s with every file hashed",
               extra={"ledger": ledger, "recorded": recorded, "hashed": hashed}),
        Figure("3", "code hashes of all rules, cold process (CPU)", float(code.stdout.strip().splitlines()[-1]), None, "s"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4,1000")
    p.add_argument("--cores", type=int, default=cores())
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-content-") as tmp:
        workdir = args.workdir or Path(tmp)
        figures = [f for n in sizes for f in measure(workdir, n, args.cores)]
    emit(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
