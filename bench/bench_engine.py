"""Engine benchmark (``make bench-engine``): fits per second per risk profile, skfolio's stock fit against the window engine.

On real walk-forward windows of the shipped data (252 observations, one every 20), at
5, 20 and the most assets the shipped datasets give together (skfolio's 20 S&P 500
stocks, its 5 factor ETFs and the S&P 500 index on their common dates, 2014-2022: 26;
50 do not ship). For every risk profile the manifest accepts, each window is fitted by

* **stock**: the skfolio estimator of ``engines.make_optimizer`` called the plain way,
  ``fit`` on the DataFrame window (what every window cost before the engine);
* **engine**: ``window_engine.WindowEngine.fit`` on the ndarray window, its prior
  (``window_engine.window_prior``) estimated for that fit alone; and, as the walk-forward of
  a sleeve runs it, with the prior estimated once per window for all profiles
  (``engine, shared prior``: the prior's cost divided by the number of profiles that
  use it);

the two paths alternating window by window, so machine load hits both alike. Every
engine fit is checked against the stock weights (max abs difference). The per-window
cost is broken down into prior estimation, problem build, solve and the rest
(validation, estimator set-up, result handling): for the stock path the prior is
skfolio's ``EmpiricalPrior`` fitted on the DataFrame, build and solve are cvxpy's own
``compilation_time`` and Clarabel's ``solve_time`` (``save_problem=True``).

Prints the table and writes it between the ``bench-engine`` markers of
docs/performance.md.

    python bench/bench_engine.py [--windows 60] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from datetime import datetime

import numpy as np
from common import PROJECT, Figure, machine, write_block

DOC = PROJECT / "docs" / "performance.md"
OPTIMIZING = ("min_variance", "hrp", "risk_parity", "max_diversification")
TARGET = 3.0


def datasets() -> dict[str, object]:
    """Returns frames of 5, 20 and the most shipped assets, by label."""
    import pandas as pd
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index
    from skfolio.preprocessing import prices_to_returns

    sp = load_sp500_dataset()
    wide = pd.concat([sp, load_factors_dataset(), load_sp500_index()], axis=1, join="inner").dropna()
    return {
        "5": prices_to_returns(sp.loc["2012":, list(sp.columns[:5])]),
        "20": prices_to_returns(sp.loc["2012":]),
        str(wide.shape[1]): prices_to_returns(wide),
    }


def windows(X, n: int, train: int = 252, step: int = 20) -> list:
    starts = range(0, len(X) - train, step)
    return [X.iloc[s : s + train] for s in list(starts)[:n]]


def stock_breakdown(profile: str, window) -> dict:
    """One stock fit of ``profile`` with its parts: prior, build (cvxpy compile), solve, rest."""
    from skfolio.prior import EmpiricalPrior

    from tradingview_scraper.engines import make_optimizer

    t0 = time.perf_counter()
    EmpiricalPrior().fit(window)
    prior = time.perf_counter() - t0
    model = make_optimizer(profile)
    if hasattr(model, "save_problem"):
        model.set_params(save_problem=True)
    t0 = time.perf_counter()
    model.fit(window)
    total = time.perf_counter() - t0
    problem = getattr(model, "problem_", None)
    build = solve = 0.0
    if problem is not None:
        build = float(problem.compilation_time or 0.0)
        solve = float(problem.solver_stats.solve_time or 0.0)
    return {"prior": prior, "build": build, "solve": solve, "total": total}


def measure(label: str, X, profiles: list[str], n_windows: int) -> list[dict]:
    from tradingview_scraper.engines import make_optimizer
    from tradingview_scraper.window_engine import WindowEngine, window_prior

    wins = windows(X, n_windows)
    arrays = [w.to_numpy() for w in wins]
    rows = []
    for rp in profiles:
        make_optimizer(rp).fit(wins[0])  # warm both paths (imports; the engine compiles its problem once per process)
        t0 = time.perf_counter()
        WindowEngine(rp).fit(arrays[0])
        first = time.perf_counter() - t0
        engine = WindowEngine(rp)
        stock = fast = fast_prior = 0.0
        err = 0.0
        for frame, x in zip(wins, arrays, strict=True):
            t0 = time.perf_counter()
            expected = make_optimizer(rp).fit(frame).weights_
            t1 = time.perf_counter()
            prior = window_prior(x) if engine.needs_prior else None
            t2 = time.perf_counter()
            got = engine.fit(x, prior)
            t3 = time.perf_counter()
            stock += t1 - t0
            fast += t3 - t1
            fast_prior += t2 - t1
            err = max(err, float(np.abs(np.asarray(got) - np.asarray(expected)).max()))
        n = len(wins)
        parts = [stock_breakdown(rp, w) for w in wins[: max(5, n // 4)]]
        sb = {k: float(np.mean([p[k] for p in parts])) for k in ("prior", "build", "solve", "total")}
        sharing = max(1, sum(WindowEngine(p).needs_prior for p in profiles))
        shared = (fast - fast_prior + fast_prior / sharing) / n
        eb = {k: v / n for k, v in engine.seconds.items()}
        rows.append(
            {
                "assets": label,
                "profile": rp,
                "windows": n,
                "stock_ms": stock / n * 1e3,
                "engine_ms": fast / n * 1e3,
                "shared_ms": shared * 1e3,
                "speedup": stock / fast,
                "speedup_shared": (stock / n) / shared,
                "max_abs_diff": err,
                "engine_first_fit_ms": first * 1e3,
                "engine_fast_fits": engine.fast_fits,
                "engine_skfolio_fits": engine.skfolio_fits,
                "stock_parts_ms": {
                    "prior": sb["prior"] * 1e3,
                    "build": sb["build"] * 1e3,
                    "solve": sb["solve"] * 1e3,
                    "rest": max(0.0, sb["total"] - sb["prior"] - sb["build"] - sb["solve"]) * 1e3,
                },
                "engine_parts_ms": {
                    "prior": fast_prior / n * 1e3,
                    "build": eb["build"] * 1e3,
                    "solve": eb["solve"] * 1e3,
                    "rest": max(0.0, (fast - fast_prior) / n - eb["build"] - eb["solve"]) * 1e3,
                },
            }
        )
        r = rows[-1]
        print(
            f"  {label:>2} assets {rp:<20} stock {r['stock_ms']:6.2f} ms  engine {r['engine_ms']:6.2f} ms "
            f"(shared prior {r['shared_ms']:5.2f})  x{r['speedup']:.2f} (x{r['speedup_shared']:.2f})  "
            f"max|dw| {err:.1e}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(rows: list[dict], before: dict, after: dict, wall: float) -> str:
    def parts(p: dict) -> str:
        return " / ".join(f"{p[k]:.2f}" for k in ("prior", "build", "solve", "rest"))

    lines = [
        f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M')} by `make bench-engine` ({wall:.0f} s), one thread "
        f"(OMP_NUM_THREADS=1). Load before: `{before['uptime']}`; after: `{after['uptime']}`. The two paths "
        "alternate window by window, so the ratios compare like with like; absolute times carry the load.",
        "",
        "| assets | risk profile | windows | stock fits/s | engine fits/s | speedup | engine, shared prior: fits/s | speedup | "
        "target (optimizing, 20 assets) | max abs weight diff | stock ms: prior / build / solve / rest | "
        "engine ms: prior / build / solve / rest |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        target = ""
        if r["assets"] == "20" and r["profile"] in OPTIMIZING:
            target = f">= {TARGET:.0f}x: " + ("pass" if r["speedup"] >= TARGET else "**FAIL**")
        lines.append(
            f"| {r['assets']} | {r['profile']} | {r['windows']} | {1e3 / r['stock_ms']:.0f} | {1e3 / r['engine_ms']:.0f} | "
            f"{r['speedup']:.2f}x | {1e3 / r['shared_ms']:.0f} | {r['speedup_shared']:.2f}x | {target} | "
            f"{r['max_abs_diff']:.1e} | {parts(r['stock_parts_ms'])} | {parts(r['engine_parts_ms'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=60, help="windows per size (default 60)")
    p.add_argument("--profiles", help="comma-separated risk profiles (default: every one the manifest accepts)")
    p.add_argument("--no-write", action="store_true", help="print only, leave docs/performance.md alone")
    args = p.parse_args(argv)
    from tradingview_scraper.engines import RISK_PROFILES

    profiles = args.profiles.split(",") if args.profiles else list(RISK_PROFILES)
    before = machine()
    t0 = time.perf_counter()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, X in datasets().items():
            rows += measure(label, X, profiles, args.windows)
    wall = time.perf_counter() - t0
    block = table(rows, before, machine(), wall)
    print(block, file=sys.stderr)
    if not args.no_write:
        write_block(DOC, "bench-engine", block)
        print(f"wrote {DOC.relative_to(PROJECT)}", file=sys.stderr)
    figures = [
        Figure(
            item="E",
            name=f"engine speedup, {r['profile']}, {r['assets']} assets",
            measured=r["speedup"],
            target=TARGET if (r["assets"] == "20" and r["profile"] in OPTIMIZING) else None,
            unit="x",
            better="above",
            note=f"stock {r['stock_ms']:.2f} ms / engine {r['engine_ms']:.2f} ms per fit; max |dw| {r['max_abs_diff']:.1e}",
        )
        for r in rows
    ]
    print(json.dumps([f.to_dict() for f in figures]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
