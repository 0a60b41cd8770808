"""Driver CPU per sleeve: what receiving a sleeve's results costs the driver, and the sleeve stage's whole CPU there.

Two measurements, CPU time of the driver's thread (``time.thread_time``), not wall time:

* ``transport``: one real sleeve (``realistic_manifest``'s first: 5 S&P 500 stocks, 12
  years of daily data, every risk profile), each risk profile computed once as a task
  computes it; then what the driver does with the tasks' results, repeated: unpickle them
  and merge them into the sleeve's one result. Once as the results travel now (a
  ``SleeveResult``, its returns an Arrow table) and once as they travelled before (dates as
  ISO strings and each column a list of floats, rebuilt into a frame on the driver;
  reproduced here for the comparison).
* ``ray``: the same results coming back from tasks on a private Ray cluster (each task
  loads its stored part and returns it, in one form or the other): the driver's CPU for
  ``Cluster.map`` (submitting, waiting, ``ray.get`` and deserializing) and the merge.
* ``stage``: the pipeline on a private Ray cluster (``bench/run_pipeline.py``) over
  ``--sleeves`` sleeves; the ledger's ``cpu_s`` of each ``sleeve`` stage (the job thread's
  CPU: waiting for the tasks, receiving and merging their results, writing the sleeve's
  artifacts, its ledger line). Runs with any version of the package, so the same file run
  from another checkout measures that checkout (``--part stage``).

    python bench/bench_transport.py [--part transport|ray|stage|all] [--sleeves 8] [--repeats 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import PROJECT, PYTHON, bench_env, cores, realistic_manifest, write_json

BENCH = Path(__file__).resolve().parent


def _as_lists(part) -> dict:
    """A task's result as it travelled before: JSON-able lists."""
    r = part.returns
    return {
        "index": [d.isoformat() for d in r.index],
        "columns": {c: r[c].tolist() for c in r.columns},
        "weights": part.weights,
        "health": part.health,
        "sign_test": part.sign_test,
    }


def _from_lists(payload: dict):
    import pandas as pd

    from tradingview_scraper.sleeve import SleeveResult

    idx = pd.DatetimeIndex(pd.to_datetime(payload["index"]), name="date")
    returns = pd.DataFrame(payload["columns"], index=idx, dtype=float)
    return SleeveResult(returns, payload["weights"], payload["health"], payload["sign_test"])


def _cpu_ms(fn, repeats: int) -> float:
    """Median driver-thread CPU milliseconds of ``fn()`` over ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        samples.append(1e3 * (time.thread_time() - t0))
    return statistics.median(samples)


def _parts() -> list:
    """One sleeve's results, one per risk profile, as its tasks compute them."""
    from tradingview_scraper.manifest import resolve
    from tradingview_scraper.sleeve import compute_sleeve

    plan = resolve(realistic_manifest(1), "sleeve0")
    return [compute_sleeve(plan.root.config, [rp], sleeve_id="s0", profile="sleeve0") for rp in plan.risk_profiles]


def transport(parts: list, repeats: int = 200) -> dict:
    """The driver's CPU to unpickle and merge one sleeve's task results, as Arrow and as lists."""
    from tradingview_scraper.sleeve import SleeveResult

    rps = [p.returns.columns[0] for p in parts]
    arrow = [pickle.dumps(p, protocol=5) for p in parts]
    lists = [pickle.dumps(_as_lists(p), protocol=5) for p in parts]
    now = _cpu_ms(lambda: SleeveResult.merge([pickle.loads(b) for b in arrow]), repeats)
    before = _cpu_ms(lambda: SleeveResult.merge([_from_lists(pickle.loads(b)) for b in lists]), repeats)
    merged = SleeveResult.merge([pickle.loads(b) for b in arrow]).returns
    return {
        "dates": len(merged),
        "risk_profiles": len(rps),
        "arrow_ms_per_sleeve": now,
        "lists_ms_per_sleeve": before,
        "ratio": now / before,
        "arrow_bytes": sum(map(len, arrow)),
        "lists_bytes": sum(map(len, lists)),
    }


def _load_part(path: str, as_lists: bool):
    """A task returning a stored result, in the form it travels now or the one it travelled before."""
    with open(path, "rb") as fh:
        part = pickle.load(fh)
    return _as_lists(part) if as_lists else part


def on_ray(parts: list, rounds: int = 20) -> dict:
    """The driver's CPU to collect one sleeve's results from Ray tasks and merge them, both forms."""
    from tradingview_scraper.cluster import Cluster
    from tradingview_scraper.sleeve import SleeveResult

    with tempfile.TemporaryDirectory(prefix="tvs-parts-") as tmp:
        paths = []
        for i, part in enumerate(parts):
            paths.append(str(Path(tmp) / f"part{i}.pkl"))
            Path(paths[-1]).write_bytes(pickle.dumps(part))
        cluster = Cluster(num_cpus=min(2, cores())).start()
        try:

            def receive(as_lists: bool) -> float:
                t0 = time.thread_time()
                done = cluster.map(_load_part, [(("s0", str(i)), (path, as_lists), {}) for i, path in enumerate(paths)])
                results = [r for r, _ in done.values()]
                SleeveResult.merge([_from_lists(r) for r in results] if as_lists else results)
                return 1e3 * (time.thread_time() - t0)

            receive(False), receive(True)  # workers started, code shipped
            samples: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for as_lists in (False, True):
                    samples[as_lists].append(receive(as_lists))
        finally:
            cluster.shutdown()
    now, before = statistics.median(samples[False]), statistics.median(samples[True])
    return {"rounds": rounds, "arrow_ms_per_sleeve": now, "lists_ms_per_sleeve": before, "ratio": now / before}


def stage(workdir: Path, n_sleeves: int, repeats: int) -> dict:
    """The ledger's driver CPU of every ``sleeve`` stage over ``repeats`` fresh pipeline runs."""
    manifest = write_json(workdir / "manifest.json", realistic_manifest(n_sleeves))
    cpu = []
    for i in range(repeats):
        run_id = f"transport{i}-" + datetime.now().strftime("%H%M%S")
        cmd = [PYTHON, str(BENCH / "run_pipeline.py"), "--manifest", str(manifest), "--profile", "bench",
               "--run-id", run_id, "--runs-root", str(workdir / "runs"), "--cores", str(cores())]  # fmt: skip
        proc = subprocess.run(cmd, cwd=PROJECT, env=bench_env(), capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"run_pipeline exited {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}")
        run_dir = Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])
        for line in (run_dir / "audit.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "stage" and record.get("stage") == "sleeve":
                cpu.append(1e3 * record["cpu_s"])
    return {"sleeves": n_sleeves, "runs": repeats, "stage_ms_mean": statistics.mean(cpu),
            "stage_ms_median": statistics.median(cpu), "samples_ms": cpu}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["transport", "ray", "stage", "all"], default="all")
    p.add_argument("--sleeves", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="pipeline runs of the stage part")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    out: dict = {}
    parts = _parts() if args.part in ("transport", "ray", "all") else []
    if args.part in ("transport", "all"):
        t = out["transport"] = transport(parts)
        print(f"transport: {t['arrow_ms_per_sleeve']:.2f} ms per sleeve as Arrow, {t['lists_ms_per_sleeve']:.2f} ms "
              f"as lists ({t['ratio']:.2f} of it); {t['risk_profiles']} tasks of {t['dates']} dates",
              file=sys.stderr)  # fmt: skip
    if args.part in ("ray", "all"):
        r = out["ray"] = on_ray(parts)
        print(f"ray: {r['arrow_ms_per_sleeve']:.2f} ms per sleeve as Arrow, {r['lists_ms_per_sleeve']:.2f} ms as lists "
              f"({r['ratio']:.2f} of it), median of {r['rounds']} rounds", file=sys.stderr)  # fmt: skip
    if args.part in ("stage", "all"):
        with tempfile.TemporaryDirectory(prefix="tvs-transport-") as tmp:
            s = out["stage"] = stage(args.workdir or Path(tmp), args.sleeves, args.repeats)
        print(f"stage: driver CPU of the sleeve stage {s['stage_ms_mean']:.1f} ms per sleeve (median "
              f"{s['stage_ms_median']:.1f} ms) over {len(s['samples_ms'])} sleeve jobs", file=sys.stderr)  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
