"""Pure-compute reference: a meta profile's sleeves and meta stages in one process pool, no orchestration.

The same work as the pipeline's sleeve, meta_returns, meta_optimize and flatten jobs, done
by calling the package's pure functions (``sleeve.compute_sleeve``, ``meta.meta_returns``,
``meta.meta_optimize``, ``meta.flatten``) in one ``ProcessPoolExecutor`` with the same
cores: no Snakemake, no Ray, no artifacts, no report. Its wall time is the denominator of
the overhead ratio (bench/bench_overhead.py).

    python bench/reference.py --manifest M --profile P [--cores N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import PROJECT, cores

from tradingview_scraper.manifest import load_plan


def _sleeve(config: dict, risk_profiles: list[str], sleeve_id: str, profile: str) -> tuple[float, object]:
    from tradingview_scraper.sleeve import compute_sleeve

    t0 = time.perf_counter()
    result = compute_sleeve(config, risk_profiles, sleeve_id=sleeve_id, profile=profile, base_dir=str(PROJECT))
    return time.perf_counter() - t0, result


def _sleeves(pool: ProcessPoolExecutor, children: list, rps: list[str]) -> dict:
    """Each sleeve's risk profiles as one task each (as the pipeline splits them), merged per sleeve."""
    from tradingview_scraper.sleeve import SleeveResult

    futures = {
        (c.sleeve_id, rp): pool.submit(_sleeve, c.config, [rp], c.sleeve_id, c.profile) for c in children for rp in rps
    }
    done = {key: f.result() for key, f in futures.items()}
    return {
        c.sleeve_id: (
            sum(done[c.sleeve_id, rp][0] for rp in rps),
            SleeveResult.merge([done[c.sleeve_id, rp][1] for rp in rps]),
        )
        for c in children
    }


def _metas(pool: ProcessPoolExecutor, results: dict, rps: list[str], config: dict) -> dict:
    futures = {
        rp: pool.submit(
            _meta,
            rp,
            {sid: r.returns[rp] for sid, (_, r) in results.items()},
            {sid: r.weights[rp]["weights"] for sid, (_, r) in results.items()},
            config,
        )
        for rp in rps
    }
    return {rp: f.result() for rp, f in futures.items()}


def _meta(profile: str, streams: dict, holdings: dict, config: dict) -> tuple[float, dict]:
    from tradingview_scraper.meta import flatten, meta_optimize, meta_returns

    t0 = time.perf_counter()
    alloc, bt = config["meta_allocation"], config["backtest"]
    frame = meta_returns(streams, min_obs=bt["train_window"] + bt["test_window"])
    record, _stream, _tree = meta_optimize(
        frame,
        profile,
        min_weight=alloc["min_weight"],
        max_weight=alloc["max_weight"],
        train_window=bt["train_window"],
        test_window=bt["test_window"],
    )
    flat = flatten(record["weights"], holdings)
    return time.perf_counter() - t0, flat


def run_reference(manifest: str | Path, profile: str, n_cores: int) -> dict:
    """Compute every atomic sleeve, then every risk profile's meta layer, in one pool.

    Each (sleeve, risk profile) is one task, as in the pipeline.

    Parameters
    ----------
    manifest : path
        Manifest JSON.
    profile : str
        A one-level meta profile of atomic sleeves.
    n_cores : int
        Workers of the pool (the pipeline's --cores).

    Returns
    -------
    dict
        ``wall`` (seconds, pool start-up included), ``incremental_wall`` (recomputing the first
        sleeve and then the meta layer, in a fresh pool), ``sleeves_wall`` (until the last sleeve
        returned), ``sleeve_seconds`` (sum of the sleeves' compute), ``meta_seconds`` (sum of
        the meta layers' compute) and ``flattened`` (gross weight sums per risk profile).

    Raises
    ------
    ValueError
        The profile nests meta profiles or pins sleeves (the reference computes one level).
    """
    plan = load_plan(profile, manifest)
    root = plan.root
    children = [plan.nodes[c] for c in root.children]
    if any(c.is_meta or c.pin for c in children):
        raise ValueError(f"profile {profile!r}: the reference computes one level of unpinned atomic sleeves")
    rps = plan.risk_profiles
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one thread per task, as Ray gives its num_cpus=1 workers
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=n_cores) as pool:
        results = _sleeves(pool, children, rps)
        sleeves_wall = time.perf_counter() - t0
        meta_results = _metas(pool, results, rps, root.config)
    wall = time.perf_counter() - t0
    # What a rerun after changing the first sleeve must compute, in a fresh pool as the full
    # run had: that sleeve, then the whole meta layer again.
    t1 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=n_cores) as pool:
        results |= _sleeves(pool, children[:1], rps)
        _metas(pool, results, rps, root.config)
    incremental_wall = time.perf_counter() - t1
    return {
        "wall": wall,
        "incremental_wall": incremental_wall,
        "sleeves_wall": sleeves_wall,
        "sleeve_seconds": sum(t for t, _ in results.values()),
        "meta_seconds": sum(t for t, _ in meta_results.values()),
        "flattened": {rp: flat["gross"] for rp, (_, flat) in meta_results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--cores", type=int, default=cores())
    args = p.parse_args(argv)
    print(json.dumps(run_reference(args.manifest, args.profile, args.cores)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
