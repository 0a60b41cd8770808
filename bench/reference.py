"""Pure-compute reference: a meta profile's sleeves and meta stages in one process pool, no orchestration.

The same work as the pipeline's sleeve, meta_returns, meta_optimize and flatten jobs, done
by calling the pure functions those stages call (``sleeve.compute_sleeve``, and the meta
composition ``compose.compose_profile``: aligned returns, allocation, flattening) in one
``ProcessPoolExecutor`` with the same cores: no Snakemake, no Ray, no artifacts, no report,
no gates. Its wall time is the denominator of the overhead ratio (bench/bench_overhead.py).

    python bench/reference.py --manifest M --profile P [--cores N] [--tree]
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


def _metas(pool: ProcessPoolExecutor, results: dict, rps: list[str], node, children: list) -> dict:
    returns = {sid: r.returns for sid, (_, r) in results.items()}
    futures = {
        rp: pool.submit(_meta, node, children, returns, {sid: r.weights[rp] for sid, (_, r) in results.items()}, rp)
        for rp in rps
    }
    return {rp: f.result() for rp, f in futures.items()}


def _meta(node, children: list, returns: dict, books: dict, profile: str) -> tuple:
    """One meta node's risk profile, as its stages compute it: (seconds, flattened record, stream)."""
    from tradingview_scraper.compose import compose_profile

    t0 = time.perf_counter()
    composed = compose_profile(node, children, returns, books, profile)
    return time.perf_counter() - t0, composed.flattened, composed.stream


def run_reference_tree(manifest: str | Path, profile: str, n_cores: int) -> dict:
    """Like :func:`run_reference` for a tree of meta profiles: every atomic sleeve, then each meta level.

    All atomic sleeves (one task per sleeve and risk profile) run in one pool; then the meta
    nodes bottom-up, each level's (node, risk profile) pairs as parallel tasks, a nested
    node's stream and flattened weights feeding its parent (as the pipeline's sleeve
    interface does).

    Returns
    -------
    dict
        ``wall``, ``sleeves_wall``, ``sleeve_seconds``, ``meta_seconds``, ``n_atomic``,
        ``n_meta`` and ``flattened`` (the root's gross weight sums per risk profile).
    """
    plan = load_plan(profile, manifest)
    rps = plan.risk_profiles
    atomic = [n for n in plan.atomic_nodes() if not n.pin]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    def depth(path: str) -> int:
        return 0 if path == "." else path.count("/sleeves/") + 1

    metas = sorted((k for k, n in plan.nodes.items() if n.is_meta), key=depth, reverse=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=n_cores) as pool:
        by_id = _sleeves(pool, atomic, rps)
        sleeves_wall = time.perf_counter() - t0
        path_of = {n.sleeve_id: k for k, n in plan.nodes.items() if not n.is_meta}
        # Per node and risk profile: the stream (a one-column frame) and the book a parent reads.
        streams = {path_of[sid]: {rp: r.returns[[rp]] for rp in rps} for sid, (_, r) in by_id.items()}
        books = {path_of[sid]: {rp: r.weights[rp] for rp in rps} for sid, (_, r) in by_id.items()}
        meta_seconds, flattened = 0.0, {}
        for level in sorted({depth(k) for k in metas}, reverse=True):
            keys = [k for k in metas if depth(k) == level]
            futures = {}
            for k in keys:
                node = plan.nodes[k]
                children = [plan.nodes[c] for c in node.children]
                for rp in rps:
                    returns = {plan.nodes[c].sleeve_id: streams[c][rp] for c in node.children}
                    child_books = {plan.nodes[c].sleeve_id: books[c][rp] for c in node.children}
                    futures[k, rp] = pool.submit(_meta, node, children, returns, child_books, rp)
            for (k, rp), f in futures.items():
                seconds, flat, stream = f.result()
                meta_seconds += seconds
                streams.setdefault(k, {})[rp] = stream.to_frame(rp)
                books.setdefault(k, {})[rp] = flat
                if k == ".":
                    flattened[rp] = flat["gross"]
    return {
        "wall": time.perf_counter() - t0,
        "sleeves_wall": sleeves_wall,
        "sleeve_seconds": sum(t for t, _ in by_id.values()),
        "meta_seconds": meta_seconds,
        "n_atomic": len(atomic),
        "n_meta": len(metas),
        "flattened": flattened,
    }


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
        meta_results = _metas(pool, results, rps, root, children)
    wall = time.perf_counter() - t0
    # What a rerun after changing the first sleeve must compute, in a fresh pool as the full
    # run had: that sleeve, then the whole meta layer again.
    t1 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=n_cores) as pool:
        results |= _sleeves(pool, children[:1], rps)
        _metas(pool, results, rps, root, children)
    incremental_wall = time.perf_counter() - t1
    return {
        "wall": wall,
        "incremental_wall": incremental_wall,
        "sleeves_wall": sleeves_wall,
        "sleeve_seconds": sum(t for t, _ in results.values()),
        "meta_seconds": sum(t for t, _, _ in meta_results.values()),
        "flattened": {rp: flat["gross"] for rp, (_, flat, _) in meta_results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--cores", type=int, default=cores())
    p.add_argument("--tree", action="store_true", help="nested meta profiles too; no incremental figure")
    args = p.parse_args(argv)
    run = run_reference_tree if args.tree else run_reference
    print(json.dumps(run(args.manifest, args.profile, args.cores)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
