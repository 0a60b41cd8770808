"""The risk step: where the risk of one meta node sits, per risk profile (``risk_<profile>.json``).

Ex-ante on the last training window of the meta allocation: Euler contributions of the
sleeves and of the physical positions held below the node; out of sample: each sleeve's
realised contribution to the node's stream. The mathematics is :mod:`risk`; this module
assembles a node's records from its artifacts and the prices of the positions it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .manifest import NodeSpec, Plan


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

    def returns(self, spec: NodeSpec, symbol: str, direction: str):
        """The position's per-period returns (synthetic-long for SHORT), Series named ``"<symbol> <direction>"``."""
        from .data import load_prices, prices_to_returns
        from .sleeve import synthetic_long

        if spec.profile not in self._returns:
            prices = load_prices(spec.config["data"], spec.config["universe"].get("symbols"), base_dir=self.base_dir)
            self._returns[spec.profile] = (prices.index[0], prices_to_returns(prices))
        raw = self._returns[spec.profile][1][[symbol]]
        return (synthetic_long(raw) if direction == "SHORT" else raw)[symbol].rename(f"{symbol} {direction}")

    def external(self, spec: NodeSpec, profile: str, name: str):
        """An external sleeve's wealth path of ``profile`` (its positions have no prices in the run), named ``name``."""
        from .external import external_files, read_returns

        key = f"external:{spec.path}:{profile}"
        if key not in self._returns:
            files = external_files(spec.config, [profile], self.base_dir)
            self._returns[key] = (1.0 + read_returns(files["returns"], [profile])[profile]).cumprod()
        return self._returns[key].rename(name)

    def wealth(self, spec: NodeSpec, symbol: str, direction: str):
        """The position's wealth path from 1 on the sleeve's first price date."""
        import pandas as pd

        r = self.returns(spec, symbol, direction)
        wealth = (1.0 + r).cumprod()
        start = pd.Series([1.0], index=pd.DatetimeIndex([self._returns[spec.profile][0]], name=wealth.index.name))
        return pd.concat([start, wealth]).rename(r.name)


def _asset_risk(plan: Plan, profile: str, flat: dict, window_dates, paths: _AssetPaths) -> dict:
    """Ex-ante Euler contributions of the node's flattened book, per position and per sleeve.

    Each position's prices come from the atomic sleeve the flattened file names for it
    (``held_by``: the first below the node, in plan order, that holds it).

    Two cases fall back, as a walk-forward window does, and are named under ``fallbacks``
    (present only when there are some): a position whose wealth path reaches 0 before or in
    the window (a SHORT wiped out by a rise of 100% or more) takes its per-period returns
    compounded between the common dates (:func:`risk.interval_returns`), and a position
    constant over the window (a halted price) contributes 0 (``risk.euler_contributions``).
    """
    import numpy as np
    import pandas as pd

    from .data import periods_per_year
    from .risk import common_date_returns, euler_contributions, interval_returns

    holders: dict[tuple[str, str], NodeSpec] = {(r["symbol"], r["direction"]): plan.nodes[r["sleeve"]] for r in flat["held_by"]}
    rows = flat["weights"]
    columns, weights, fallbacks, proxied, groups = {}, {}, [], [], {}
    for row in rows:
        key = (row["symbol"], row["direction"])
        name, holder = f"{key[0]} {key[1]}", holders[key]
        if holder.kind == "external":
            # The run has no prices for an external sleeve's positions: they move with its stream, as
            # one column (identical columns would make the covariance singular) split by weight below.
            group = f"{holder.sleeve_id} (external sleeve)"
            if group not in columns:
                groups[group] = holder
                columns[group] = common_date_returns(paths.external(holder, profile, group), window_dates)
            weights[group] = weights.get(group, 0.0) + float(row["weight"])
            proxied.append({"symbol": key[0], "direction": key[1], "sleeve": holder.sleeve_id, "column": group,
                            "weight": float(row["weight"])})  # fmt: skip
            continue
        column = common_date_returns(paths.wealth(holder, *key), window_dates)
        if not np.isfinite(column.to_numpy()).all():
            r = paths.returns(holder, *key)
            lost = r.index[(r <= -1.0).to_numpy()]
            column = interval_returns(r, window_dates)
            fallbacks.append(_fallback(
                "asset", key, holder,
                f"its wealth path reaches 0 on {lost[0].date() if len(lost) else '?'} (a loss of 100% in one period) "
                "so the returns between the window's dates are compounded from its per-period returns",
            ))  # fmt: skip
        columns[name] = column
        weights[name] = float(row["weight"])
    frame = pd.DataFrame(columns)
    res = euler_contributions(frame, pd.Series(weights))
    for p in proxied:  # an external sleeve's positions share its column's marginal contribution
        group = res["positions"][p.pop("column")]
        w = p.pop("weight")
        share = w * group["marginal"] / res["volatility"] if res["volatility"] > 0 else None
        res["positions"][f"{p['symbol']} {p['direction']}"] = {
            **group, "weight": w, "contribution": w * group["marginal"], "share": share,
        }  # fmt: skip
    for name in res.get("zero_variance", []):
        if name.endswith(" (external sleeve)"):
            fallbacks.append(_fallback("sleeve", (None, None), groups[name], (
                f"its stream is constant from {frame.index[0].date()} to {frame.index[-1].date()} (zero variance "
                "over the window): its positions' contribution is 0"
            )))  # fmt: skip
            continue
        symbol, direction = name.rsplit(" ", 1)
        fallbacks.append(_fallback(
            "asset", (symbol, direction), holders[(symbol, direction)],
            f"its price is constant from {frame.index[0].date()} to {frame.index[-1].date()} (zero variance over "
            "the window: a halted price): its contribution is 0 and skfolio's volatility check runs without it",
        ))  # fmt: skip
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
        **({"fallbacks": fallbacks} if fallbacks else {}),
        # Positions of external sleeves, whose returns are their sleeve's stream (present only when there are some).
        **({"external_positions": proxied} if proxied else {}),
    }


def _fallback(scope: str, key: tuple[str, str], holder: NodeSpec | None, reason: str) -> dict:
    """A fallback record of the risk stage: which position (or sleeve), from which sleeve, and why."""
    sleeve = (holder.sleeve_id or holder.profile) if holder is not None else None
    return {"scope": scope, "symbol": key[0], "direction": key[1], "sleeve": sleeve, "reason": reason}


def _fallback_line(node_path: str, profile: str, f: dict) -> str:
    """The console line of a risk fallback, naming the node, the risk profile and the position or sleeve."""
    who = f"sleeve {f['sleeve']!r}" if f["scope"] == "sleeve" else f"{f['symbol']} {f['direction']} (sleeve {f['sleeve']!r})"
    return f"risk {node_path} ({profile}): {who}: {f['reason']}"


def node_risk(
    node: NodeSpec,
    plan: Plan,
    run_id: str,
    base_dir: Path,
    warn: Callable[[str], None],
    meta_returns: Mapping,
    meta_weights: Mapping[str, dict],
    meta_stream: Mapping,
    flattened: Mapping[str, dict],
    prices: Sequence[str] = (),
) -> dict[str, dict]:
    """``risk_<profile>.json`` of meta node ``node``, every risk profile of ``meta_returns``.

    Ex-ante on the last training window of the meta allocation (``fitted_on`` of
    ``meta/weights_<p>.json``): Euler contributions of the sleeves (meta weights on the
    sleeves' streams, what the meta optimizer fitted on) and of the physical positions (the
    flattened book held over the same common dates, each asset's returns compounded between
    them). Out of sample: each sleeve's realised contribution to the stream.

    A halted position or sleeve (constant over the window) or a wiped-out SHORT position does
    not stop the step: it falls back (see :func:`_asset_risk`), is named through ``warn``, and
    is listed under ``fallbacks`` in the record (present only when there are some).

    Parameters
    ----------
    node : NodeSpec
        The meta node.
    plan : Plan
        The run's plan (the sleeves below the node that hold each position).
    run_id : str
        The run's id, recorded in each record.
    base_dir : Path
        The directory the data blocks' relative paths start from.
    warn : callable
        Takes each fallback's console line.
    meta_returns : dict of str -> DataFrame of shape (n_dates, n_sleeves)
        Per risk profile, the sleeves' streams on the common dates (``meta/returns_<p>.parquet``).
    meta_weights : dict of str -> dict
        Per risk profile, the meta allocation (``meta/weights_<p>.json``).
    meta_stream : dict of str -> DataFrame of shape (n_test_dates, 1)
        Per risk profile, the node's out-of-sample stream (``meta/stream_<p>.parquet``).
    flattened : dict of str -> dict
        Per risk profile, the node's flattened book (``flattened_<p>.json``).
    prices : sequence of str
        The price files of the atomic sleeves below the node and the returns files of the
        external ones: each is read through its sleeve's data block (or external block),
        which names it.

    Returns
    -------
    dict of str -> dict
        Risk profile -> its record.

    Raises
    ------
    DataError
        Returns the contributions cannot be computed on (see :mod:`risk`), or a common date
        missing from a position's prices.
    """
    import pandas as pd

    from .data import periods_per_year
    from .risk import euler_contributions, realised_contributions

    paths, out = _AssetPaths(base_dir), {}
    for profile, returns in meta_returns.items():
        meta, flat, stream = meta_weights[profile], flattened[profile], meta_stream[profile][profile]
        fitted = meta["fitted_on"]
        window = returns.loc[pd.Timestamp(fitted["start"]) : pd.Timestamp(fitted["end"])]
        first = returns.index.get_loc(window.index[0])
        dates = returns.index[max(first - 1, 0) : first + len(window)]
        sleeves = euler_contributions(window, pd.Series(meta["weights"], dtype=float))
        ppy = periods_per_year(window.index)
        windows = meta.get("windows")
        assets = _asset_risk(plan, profile, flat, dates, paths)
        fallbacks = [
            {"scope": "sleeve", "symbol": None, "direction": None, "sleeve": s,
             "reason": f"its stream is constant from {window.index[0].date()} to {window.index[-1].date()} "
                       "(zero variance over the window): its contribution is 0 and skfolio's volatility "
                       "check runs without it"}
            for s in sleeves.get("zero_variance", [])
        ] + assets.pop("fallbacks", [])  # fmt: skip
        for f in fallbacks:
            warn(_fallback_line(node.path, profile, f))
        out[profile] = {
            "meta_profile": node.profile,
            "risk_profile": profile,
            "run_id": run_id,
            "node": node.path,
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
            "assets": assets,
            "realised": (
                realised_contributions(returns, stream, windows["start"], windows["weights"]) if windows else None
            ),
            **({"fallbacks": fallbacks} if fallbacks else {}),
        }
    return out
