"""Items 6 and 7: flattening 10,000 sleeves x 500 assets x 4 risk profiles, core and full function, peak RSS.

The vectorized core (``flattening.flatten_matrix``: meta weights @ sleeve-by-asset matrix plus the
conservation checks) runs on matrices; the full ``flattening.flatten`` (JSON rows in, JSON rows
out, what the flatten stage calls) runs on the same holdings as row dicts. Every sleeve holds
every asset (the dense worst case: 5,000,000 rows per profile); a few columns are SHORT.
A second, realistic case has each sleeve hold 20 of the 500 assets. Peak RSS is read after
the core (the core's peak) and after the dense full function. Prints the
figures as JSON (see common.emit).

    python bench/bench_flatten.py [--sleeves 10000] [--assets 500] [--profiles 4]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import Figure, emit, peak_rss_mb

from tradingview_scraper.flattening import flatten, flatten_matrix

TARGET_S = 2.0


def _problem(
    rng: np.random.Generator, n_sleeves: int, n_assets: int, held: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    holdings = rng.random((n_sleeves, n_assets))
    if held is not None:  # each sleeve holds ``held`` random assets
        keep = rng.random((n_sleeves, n_assets)).argsort(axis=1)[:, :held]
        mask = np.zeros_like(holdings, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        holdings[~mask] = 0.0
    holdings /= holdings.sum(axis=1, keepdims=True)
    meta = rng.random(n_sleeves)
    meta /= meta.sum()
    short = np.zeros(n_assets, dtype=bool)
    short[:: max(n_assets // 10, 1)] = True
    return meta, holdings, short


def _full(problems: list, sleeves: list[str], symbols: list[str]) -> tuple[float, int]:
    """Seconds of ``flattening.flatten`` over the problems given as JSON rows (zero weights left out), rows per profile."""
    seconds, n_rows = 0.0, 0
    for meta, holdings, short in problems:
        directions = ["SHORT" if s else "LONG" for s in short]
        rows = {
            sid: [{"symbol": sym, "direction": d, "weight": w} for sym, d, w in zip(symbols, directions, row, strict=True) if w]
            for sid, row in zip(sleeves, holdings.tolist(), strict=True)
        }
        n_rows = sum(map(len, rows.values()))
        sleeve_weights = dict(zip(sleeves, meta.tolist(), strict=True))
        t0 = time.perf_counter()
        out = flatten(sleeve_weights, rows)
        seconds += time.perf_counter() - t0
        assert abs(out["gross"] - 1.0) < 1e-9
        del rows, out
    return seconds, n_rows


def measure(n_sleeves: int, n_assets: int, n_profiles: int, held: int) -> list[Figure]:
    """Time the core over every profile, then the full function; return item 6 and 7 figures."""
    rng = np.random.default_rng(0)
    problems = [_problem(rng, n_sleeves, n_assets) for _ in range(n_profiles)]
    size = f"{n_sleeves:,} sleeves x {n_assets} assets x {n_profiles} profiles"
    rss_before = peak_rss_mb()

    t0 = time.perf_counter()
    for meta, holdings, short in problems:
        gross, _ = flatten_matrix(meta, holdings, short)
        assert abs(gross.sum() - 1.0) < 1e-9
    core = time.perf_counter() - t0
    rss_core = peak_rss_mb()

    sleeves = [f"s{i:05d}" for i in range(n_sleeves)]
    symbols = [f"A{j:04d}" for j in range(n_assets)]
    full, rows_per_profile = _full(problems, sleeves, symbols)
    rss_full = peak_rss_mb()
    del problems
    sparse, sparse_rows = _full([_problem(rng, n_sleeves, n_assets, held) for _ in range(n_profiles)], sleeves, symbols)
    return [
        Figure("6", f"flatten core (flatten_matrix), {size}", core, TARGET_S, "s",
               note=f"{1000 * core / n_profiles:.0f} ms per profile; matrices of {n_sleeves * n_assets * 8 / 2**20:.0f} MiB"),
        Figure("6", f"flatten full function (JSON rows in and out), {size}", full, TARGET_S, "s",
               note=f"{full / n_profiles:.2f} s per profile for {rows_per_profile:,} input rows and as many "
                    "per-sleeve contributions out: the row format, not the algebra"),
        Figure("6", f"flatten full function, each sleeve holding {held} of the {n_assets} assets", sparse, TARGET_S, "s",
               note=f"{sparse / n_profiles:.2f} s per profile for {sparse_rows:,} rows"),
        Figure("7", "peak RSS, flatten core", rss_core, None, "MiB",
               note=f"{rss_before:.0f} MiB before (inputs of {n_profiles} profiles generated)"),
        Figure("7", "peak RSS, flatten full function", rss_full, None, "MiB",
               note=f"one profile's {rows_per_profile:,} row dicts at a time"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sleeves", type=int, default=10_000)
    p.add_argument("--assets", type=int, default=500)
    p.add_argument("--profiles", type=int, default=4)
    p.add_argument("--held", type=int, default=20, help="assets per sleeve of the sparse case")
    args = p.parse_args(argv)
    emit(measure(args.sleeves, args.assets, args.profiles, args.held))
    return 0


if __name__ == "__main__":
    sys.exit(main())
