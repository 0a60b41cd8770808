"""The risk stage: ex-ante Euler contributions of sleeves and positions, realised contributions."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from ..layout import read_json, read_parquet, write_json
from ..manifest import NodeSpec
from ..run import RunContext
from ._common import Files, _await_prewarm, _named, _stage


class _AssetPaths:
    """Wealth paths of the physical positions below a node, loaded once per atomic profile.

    A position (symbol, direction) takes its prices from the first atomic sleeve (in plan
    order) holding it; a SHORT position's path compounds its synthetic-long returns
    ``-min(r, 1)``, as the sleeve's optimizer saw them. Each sleeve's prices load with its
    own universe, so the calendar is the sleeve's own.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._returns: dict[str, object] = {}

    def wealth(self, spec: NodeSpec, symbol: str, direction: str):
        import pandas as pd

        from ..data import load_prices, prices_to_returns
        from ..sleeve import synthetic_long

        if spec.profile not in self._returns:
            prices = load_prices(spec.config["data"], spec.config["universe"].get("symbols"), base_dir=self.base_dir)
            self._returns[spec.profile] = (prices.index[0], prices_to_returns(prices))
        first, raw = self._returns[spec.profile]
        r = raw[[symbol]]
        r = (synthetic_long(r) if direction == "SHORT" else r)[symbol]
        wealth = (1.0 + r).cumprod()
        start = pd.Series([1.0], index=pd.DatetimeIndex([first], name=wealth.index.name))
        return pd.concat([start, wealth]).rename(f"{symbol} {direction}")


def _asset_risk(ctx, node_path, profile, flat, window_dates, paths: _AssetPaths) -> dict:
    """Ex-ante Euler contributions of the node's flattened book, per position and per sleeve.

    Each position's prices come from the atomic sleeve the flattened file names for it
    (``held_by``: the first below the node, in plan order, that holds it).
    """
    import pandas as pd

    from ..data import periods_per_year
    from ..risk import common_date_returns, euler_contributions

    if "held_by" not in flat:
        raise DataError(f"risk: the flattened book of node {node_path!r} ({profile}) names no sleeve per position "
                        "(held_by): it predates this version; rerun its flatten job")  # fmt: skip
    holders: dict[tuple[str, str], NodeSpec] = {(r["symbol"], r["direction"]): ctx.spec(r["sleeve"]) for r in flat["held_by"]}
    rows = flat["weights"]
    columns, weights = {}, {}
    for row in rows:
        key = (row["symbol"], row["direction"])
        if key not in holders:
            raise DataError(f"risk: no atomic sleeve below node {node_path!r} holds {key[0]} {key[1]} ({profile})")
        name = f"{key[0]} {key[1]}"
        columns[name] = common_date_returns(paths.wealth(holders[key], *key), window_dates)
        weights[name] = float(row["weight"])
    frame = pd.DataFrame(columns)
    res = euler_contributions(frame, pd.Series(weights))
    sigma, ppy = res["volatility"], periods_per_year(frame.index)
    out_rows, by_sleeve = [], {}
    for row in rows:
        pos = res["positions"][f"{row['symbol']} {row['direction']}"]
        parts = {s: float(c) * pos["marginal"] for s, c in row.get("sleeves", {}).items()}
        for s, part in parts.items():
            agg = by_sleeve.setdefault(s, {"weight": 0.0, "contribution": 0.0})
            agg["weight"] += float(row["sleeves"][s])
            agg["contribution"] += part
        out_rows.append({"symbol": row["symbol"], "direction": row["direction"], **pos, "sleeves": parts})
    for agg in by_sleeve.values():
        agg["share"] = agg["contribution"] / sigma if sigma > 0 else None
    out_rows.sort(key=lambda r: (-r["contribution"], r["symbol"], r["direction"]))
    return {
        "volatility": sigma,
        "annualised_volatility": sigma * ppy**0.5,
        "periods_per_year": ppy,
        "n_obs": res["n_obs"],
        "start": frame.index[0].date().isoformat(),
        "end": frame.index[-1].date().isoformat(),
        "rows": out_rows,
        "by_sleeve": by_sleeve,
    }


def run_risk(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write ``output["risk"]`` (``risk_<profile>.json`` of meta node ``node_path``, every risk profile).

    ``input`` holds one file per risk profile (the plan's order) under ``meta_returns``,
    ``meta_weights``, ``meta_stream`` and ``flattened``, and under ``prices`` the price files
    of the atomic sleeves below the node (read through their data blocks, which name them). Ex-ante on the last training window of the
    meta allocation (``fitted_on`` of ``meta/weights_<p>.json``): Euler contributions of
    the sleeves (meta weights on the sleeves' streams, what the meta optimizer fitted on)
    and of the physical positions (the flattened book held over the same common dates, each
    asset's returns compounded between them). Out of sample: each sleeve's realised
    contribution to the stream.
    """
    _await_prewarm()
    import pandas as pd

    from ..data import periods_per_year
    from ..risk import euler_contributions, realised_contributions

    spec, files, profiles = ctx.spec(node_path), _named(input), ctx.plan.risk_profiles
    own = {k: dict(zip(profiles, files[k], strict=True)) for k in ("meta_returns", "meta_weights", "meta_stream", "flattened")}
    inputs = [own[k][p] for p in profiles for k in own] + [os.path.abspath(f) for f in files.get("prices", [])]
    outs = dict(zip(profiles, _named(output)["risk"], strict=True))
    paths = _AssetPaths(ctx.base_dir)
    with _stage(ctx, "risk", node_path, log, {"profiles": profiles}, inputs, outs.values()):
        for profile, out in outs.items():
            returns = read_parquet(own["meta_returns"][profile])
            meta = read_json(own["meta_weights"][profile])
            flat = read_json(own["flattened"][profile])
            stream = read_parquet(own["meta_stream"][profile])[profile]
            fitted = meta["fitted_on"]
            window = returns.loc[pd.Timestamp(fitted["start"]) : pd.Timestamp(fitted["end"])]
            first = returns.index.get_loc(window.index[0])
            dates = returns.index[max(first - 1, 0) : first + len(window)]
            sleeves = euler_contributions(window, pd.Series(meta["weights"], dtype=float))
            ppy = periods_per_year(window.index)
            windows = meta.get("windows")
            write_json(
                out,
                {
                    "meta_profile": spec.profile,
                    "risk_profile": profile,
                    "run_id": ctx.run_id,
                    "node": node_path,
                    "convention": (
                        "Euler: RC_i = w_i (S w)_i / sigma, sigma = sqrt(w' S w) = sum_i RC_i; S is skfolio's "
                        "EmpiricalCovariance (ddof 1) of the window's per-period returns"
                    ),
                    "window": {**fitted, "periods_per_year": ppy},
                    "sleeves": {
                        "volatility": sleeves["volatility"],
                        "annualised_volatility": sleeves["volatility"] * ppy**0.5,
                        "rows": sleeves["positions"],
                    },
                    "assets": _asset_risk(ctx, node_path, profile, flat, dates, paths),
                    "realised": (
                        realised_contributions(returns, stream, windows["start"], windows["weights"])
                        if windows
                        else None
                    ),
                },
            )

