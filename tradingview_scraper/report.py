"""The report a portfolio manager reads: out-of-sample performance, allocation, diversification, holdings, anomalies."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .layout import Node, read_json, read_parquet

#: Rows of the top-holdings table per risk profile.
TOP_HOLDINGS = 15
#: A rolling window whose annualized |Sharpe| exceeds this is an anomaly.
MAX_ABS_SHARPE = 10.0
#: A rolling window whose annualized volatility exceeds this (200%) is an anomaly.
MAX_VOLATILITY = 2.0
#: Figures of ``report_assets/`` (``<name>.png``), in the report's order.
FIGURES = ("cumulative", "drawdowns", "sleeves", "allocation", "correlation")
#: Stand-alone HTML tables of ``report_assets/`` (``<name>.html``), one per section.
TABLES = ("performance", "anomalies", "allocation", "diversification", "holdings")

_FIGURE_TITLES = {
    "cumulative": "Cumulative out-of-sample return per risk profile",
    "drawdowns": "Out-of-sample drawdowns per risk profile",
    "sleeves": "Cumulative out-of-sample return per sleeve, with the meta stream",
    "allocation": "Sleeve allocation per risk profile, with the weight bounds",
    "correlation": "Sleeve correlation per risk profile",
}
_DPI = 90
#: Sleeves a figure shows by name at most: beyond, the largest by meta weight (the tables list
#: every sleeve). A bar or a legend entry per sleeve would make figures of thousands of
#: sleeves unreadable, then larger than an image can be.
MAX_FIGURE_SLEEVES = 12


def _largest(weights: Mapping[str, Mapping[str, float]], names: list[str]) -> list[str]:
    """``names`` if few enough, else the :data:`MAX_FIGURE_SLEEVES` with the largest weight in any profile, in order."""
    if len(names) <= MAX_FIGURE_SLEEVES:
        return names
    peak = {s: max(w.get(s, 0.0) for w in weights.values()) for s in names}
    keep = set(sorted(names, key=lambda s: (-peak[s], str(s)))[:MAX_FIGURE_SLEEVES])
    return [s for s in names if s in keep]


def _shown(shown: int, total: int) -> str:
    return "" if shown == total else f" ({shown} largest of {total} sleeves)"


# --------------------------------------------------------------------------- metrics (pure)


def calendar(index: pd.DatetimeIndex) -> tuple[int, str]:
    """Periods per year of a return series' own calendar, and a sentence saying which.

    Parameters
    ----------
    index : DatetimeIndex of shape (n_dates,)

    Returns
    -------
    periods_per_year : int
        365 when the series has weekend dates (24x7), else 252.
    description : str
    """
    from .data import periods_per_year

    ppy = periods_per_year(index)
    if ppy == 365:
        return ppy, "365 periods per year (24x7 calendar: the stream has weekend dates)"
    return ppy, "252 periods per year (trading-day calendar: the stream has no weekend dates)"


def performance(returns: pd.Series, periods_per_year: int) -> dict:
    """Out-of-sample performance of one return stream, with skfolio's measures.

    Parameters
    ----------
    returns : Series of shape (n_dates,)
        Simple returns per period, DatetimeIndex.
    periods_per_year : int
        Annualization factor (252 or 365).

    Returns
    -------
    dict
        ``ann_return`` (time-weighted geometric: final wealth ** (ppy / n) - 1; NaN when
        the compounded wealth ends <= 0), ``volatility`` (sample std * sqrt(ppy)),
        ``sharpe`` (mean / std * sqrt(ppy), risk-free rate 0), ``sortino`` (mean /
        semi-deviation below 0 * sqrt(ppy)), ``max_drawdown`` (of the compounded wealth,
        a negative fraction; below -1 means the wealth went negative), ``calmar``
        (ann_return / |max_drawdown|), ``final_wealth``, ``n_obs``, ``start``, ``end``.
        Ratios are NaN when their denominator is 0.
    """
    from skfolio.measures import (
        get_drawdowns,
        max_drawdown,
        mean,
        semi_deviation,
        standard_deviation,
    )

    r = returns.to_numpy(dtype=float)
    n = len(r)
    nan = float("nan")
    out = {"n_obs": n, "start": _day(returns.index[0]) if n else None, "end": _day(returns.index[-1]) if n else None}
    if n < 2 or not np.isfinite(r).all():
        return {**out, **dict.fromkeys(("ann_return", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "final_wealth"), nan)}
    wealth = float(np.prod(1.0 + r))
    ann_return = wealth ** (periods_per_year / n) - 1.0 if wealth > 0 else nan
    mu, sd = float(mean(r)), float(standard_deviation(r))
    down = float(semi_deviation(r, min_acceptable_return=0.0))
    mdd = -float(max_drawdown(get_drawdowns(r, compounded=True)))
    root = math.sqrt(periods_per_year)
    return {
        **out,
        "ann_return": ann_return,
        "volatility": sd * root,
        "sharpe": mu / sd * root if sd > 0 else nan,
        "sortino": mu / down * root if down > 0 else nan,
        "max_drawdown": mdd,
        "calmar": ann_return / abs(mdd) if mdd < 0 else nan,
        "final_wealth": wealth,
    }


def effective_number(weights: Mapping[str, float]) -> float:
    """Effective number of sleeves ``1 / sum(w**2)`` (skfolio's inverse Herfindahl index).

    Parameters
    ----------
    weights : mapping of sleeve id -> weight, n_sleeves items
    """
    from skfolio.measures import effective_number_assets

    return float(effective_number_assets(np.array(list(weights.values()), dtype=float)))


def tournament(perf: Mapping[str, dict]) -> list[dict]:
    """Risk profiles ranked by out-of-sample Sharpe, best first (undefined Sharpe last).

    Parameters
    ----------
    perf : mapping of risk profile -> :func:`performance` dict

    Returns
    -------
    list of dict
        ``{"rank", "profile", "sharpe", "ann_return", "volatility", "max_drawdown"}``.
    """
    def key(item):
        s = item[1]["sharpe"]
        return (not np.isfinite(s), -s if np.isfinite(s) else 0.0)

    ranked = sorted(perf.items(), key=key)
    return [
        {"rank": i, "profile": p, **{k: m[k] for k in ("sharpe", "ann_return", "volatility", "max_drawdown")}}
        for i, (p, m) in enumerate(ranked, start=1)
    ]


def diversification_check(meta: pd.Series, sleeves: pd.DataFrame, periods_per_year: int) -> dict:
    """Is the meta stream less volatile than its least volatile sleeve, on the same dates?

    Parameters
    ----------
    meta : Series of shape (n_dates,)
        The meta level's out-of-sample returns.
    sleeves : DataFrame of shape (n_dates_sleeves, n_sleeves)
        The sleeves' returns; only the dates of ``meta`` are used.
    periods_per_year : int

    Returns
    -------
    dict
        ``meta_volatility``, ``sleeve_volatilities`` (sleeve -> annualized volatility),
        ``least_volatile`` (sleeve id), ``least_volatility``, ``passed`` (meta volatility
        strictly below the least volatile sleeve's), ``n_obs``.

    Raises
    ------
    DataError
        If the meta stream and the sleeves share fewer than 2 dates, or there are no sleeves.
    """
    from skfolio.measures import standard_deviation

    common = meta.index.intersection(sleeves.index)
    if len(common) < 2 or sleeves.shape[1] == 0:
        raise DataError(
            f"diversification check: the meta stream and sleeves {list(sleeves.columns)} share "
            f"{len(common)} dates; at least 2 are needed"
        )
    root = math.sqrt(periods_per_year)
    meta_vol = float(standard_deviation(meta.loc[common].to_numpy(dtype=float))) * root
    vols = standard_deviation(sleeves.loc[common].to_numpy(dtype=float)) * root
    sleeve_vols = {str(s): float(v) for s, v in zip(sleeves.columns, vols, strict=True)}
    least = min(sleeve_vols, key=sleeve_vols.get)
    return {
        "meta_volatility": meta_vol,
        "sleeve_volatilities": sleeve_vols,
        "least_volatile": least,
        "least_volatility": sleeve_vols[least],
        "passed": bool(meta_vol < sleeve_vols[least]),
        "n_obs": len(common),
    }


def rolling_anomalies(
    returns: pd.DataFrame,
    window: int,
    periods_per_year: int,
    *,
    max_abs_sharpe: float = MAX_ABS_SHARPE,
    max_volatility: float = MAX_VOLATILITY,
) -> list[dict]:
    """Episodes of rolling windows with an implausible annualized Sharpe or volatility.

    Every window of ``window`` consecutive periods is checked; overlapping flagged windows
    are merged into one episode, so one bad day is listed once, with its worst values.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_series)
        One column per return stream.
    window : int
        Window length in periods (the walk-forward test window).
    periods_per_year : int
    max_abs_sharpe, max_volatility : float
        Thresholds: a window is flagged when |Sharpe| > ``max_abs_sharpe`` or volatility >
        ``max_volatility`` (annualized, as fractions).

    Returns
    -------
    list of dict
        ``{"series", "start", "end", "n_windows", "sharpe", "volatility", "reason"}``,
        ``sharpe`` the most extreme and ``volatility`` the largest value in the episode.

    Raises
    ------
    ValueError
        If ``window`` < 2.
    """
    if window < 2:
        raise ValueError(f"rolling window must be at least 2 periods, got {window}")
    root = math.sqrt(periods_per_year)
    roll = returns.rolling(window)
    sd = roll.std(ddof=1)
    vol = sd * root
    sharpe = (roll.mean() / sd.where(sd > 0)) * root
    flagged = ((sharpe.abs() > max_abs_sharpe) | (vol > max_volatility)).to_numpy()
    sharpe, vol = sharpe.to_numpy(), vol.to_numpy()
    dates = returns.index
    out = []
    for j, col in enumerate(returns.columns):
        ends = np.flatnonzero(flagged[:, j])
        if not len(ends):
            continue
        # windows ending less than `window` periods apart overlap: one episode
        groups = np.split(ends, np.flatnonzero(np.diff(ends) >= window) + 1)
        for g in groups:
            s, v = sharpe[g, j], vol[g, j]
            worst = float(s[np.nanargmax(np.abs(s))]) if np.isfinite(s).any() else float("nan")
            peak = float(np.nanmax(v))
            reasons = []
            if np.isfinite(worst) and abs(worst) > max_abs_sharpe:
                reasons.append(f"|Sharpe| {abs(worst):.1f} > {max_abs_sharpe:g}")
            if peak > max_volatility:
                reasons.append(f"volatility {peak:.0%} > {max_volatility:.0%}")
            out.append(
                {
                    "series": str(col),
                    "start": _day(dates[g[0] - window + 1]),
                    "end": _day(dates[g[-1]]),
                    "n_windows": len(g),
                    "sharpe": worst,
                    "volatility": peak,
                    "reason": "; ".join(reasons),
                }
            )
    return out


def impossible_values(returns: pd.DataFrame) -> list[dict]:
    """Values no real return stream can have, each listed.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_series)

    Returns
    -------
    list of dict
        ``{"series", "date", "value", "reason"}`` for every return <= -100% (a loss beyond
        the whole capital), every non-finite return, and the first date on which the
        compounded wealth reaches <= 0 (a drawdown beyond -100%; ``value`` is the worst
        drawdown of the series).
    """
    from skfolio.measures import get_drawdowns

    out = []
    for col in returns.columns:
        s = returns[col]
        r = s.to_numpy(dtype=float)
        for i in np.flatnonzero(~np.isfinite(r)):
            out.append({"series": str(col), "date": _day(s.index[i]), "value": float("nan"), "reason": "non-finite return"})
        for i in np.flatnonzero(r <= -1.0):
            out.append({"series": str(col), "date": _day(s.index[i]), "value": float(r[i]), "reason": "return <= -100%"})
        clean = np.where(np.isfinite(r), r, 0.0)
        wealth = np.cumprod(1.0 + clean)
        broke = np.flatnonzero(wealth <= 0)
        if len(broke):
            worst = float(np.min(get_drawdowns(clean, compounded=True)))
            out.append(
                {
                    "series": str(col),
                    "date": _day(s.index[broke[0]]),
                    "value": worst,
                    "reason": "compounded wealth <= 0 (drawdown beyond -100%)",
                }
            )
    return out


def _day(ts) -> str:
    return pd.Timestamp(ts).date().isoformat()


# --------------------------------------------------------------------------- reading a node


@dataclass
class NodeData:
    """Everything the report of one meta node reads.

    ``stream`` is the node's ``returns.parquet``: DataFrame of shape (n_oos_dates,
    n_profiles); ``sleeves[p]`` is ``meta/returns_<p>.parquet``: DataFrame of shape
    (n_dates, n_sleeves); ``weights[p]`` / ``flattened[p]`` the JSON records.
    """

    meta_profile: str
    run_id: str
    node_path: str
    risk_profiles: list[str]
    stream: pd.DataFrame
    sleeves: dict[str, pd.DataFrame]
    weights: dict[str, dict]
    flattened: dict[str, dict]


def load_node(ctx, node_path: str) -> NodeData:
    """Read the artifacts of meta node ``node_path`` of run ``ctx``.

    Raises
    ------
    DataError
        If a risk profile's column is missing from ``returns.parquet``.
    """
    node, spec = ctx.node(node_path), ctx.spec(node_path)
    profiles = list(ctx.plan.risk_profiles)
    stream = read_parquet(node.file("returns"))
    missing = [p for p in profiles if p not in stream.columns]
    if missing:
        raise DataError(
            f"{node.file('returns')}: no column for risk profile(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, stream.columns))})"
        )
    return NodeData(
        meta_profile=spec.profile,
        run_id=ctx.run_id,
        node_path=node_path,
        risk_profiles=profiles,
        stream=stream[profiles],
        sleeves={p: read_parquet(node.file("meta_returns", profile=p)) for p in profiles},
        weights={p: read_json(node.file("meta_weights", profile=p)) for p in profiles},
        flattened={p: read_json(node.file("flattened", profile=p)) for p in profiles},
    )


# --------------------------------------------------------------------------- analysis (pure)


@dataclass
class Analysis:
    """The numbers of a report, computed from :class:`NodeData` without any I/O."""

    periods_per_year: int
    calendar: str
    performance: dict[str, dict]
    effective_sleeves: dict[str, float]
    tournament: list[dict]
    diversification: dict[str, dict]
    correlation: dict[str, pd.DataFrame]
    anomalies: list[dict]


def _test_window(data: NodeData, profile: str) -> int:
    wf = data.weights[profile].get("walk_forward") or {}
    if not isinstance(wf.get("test_window"), int):
        raise DataError(
            f"meta/weights_{profile}.json of node {data.node_path!r}: walk_forward.test_window is "
            f"{wf.get('test_window')!r}; an integer number of periods is needed"
        )
    return wf["test_window"]


def analyse(data: NodeData) -> Analysis:
    """Compute every number the report shows.

    Parameters
    ----------
    data : NodeData

    Returns
    -------
    Analysis
        Performance and effective number of sleeves per profile, the tournament, the
        diversification check and sleeve correlation per profile, and every anomaly
        (``{"profile", "scope", "series", "kind", "dates", "detail"}``), impossible values first.

    Raises
    ------
    DataError
        If a weights record lacks its walk-forward test window, or the meta stream and
        the sleeves share fewer than 2 dates.
    """
    from skfolio.measures import correlation

    ppy, cal = calendar(data.stream.index)
    perf = {p: performance(data.stream[p], ppy) for p in data.risk_profiles}
    anomalies: list[dict] = []
    diversification, corr = {}, {}
    for p in data.risk_profiles:
        sleeves = data.sleeves[p]
        diversification[p] = diversification_check(data.stream[p], sleeves, ppy)
        corr[p] = pd.DataFrame(correlation(sleeves.to_numpy(dtype=float)), index=sleeves.columns, columns=sleeves.columns)
        window = _test_window(data, p)
        for scope, frame in (("meta stream", data.stream[[p]]), ("sleeve", sleeves)):
            for a in rolling_anomalies(frame, window, ppy):
                anomalies.append(
                    {
                        "profile": p,
                        "scope": scope,
                        "series": a["series"] if scope == "sleeve" else "meta",
                        "kind": f"rolling {window}-period window",
                        "dates": f"{a['start']} .. {a['end']} ({a['n_windows']} window{'s' * (a['n_windows'] > 1)})",
                        "detail": a["reason"],
                    }
                )
            for a in impossible_values(frame):
                value = "" if not np.isfinite(a["value"]) else f" ({a['value']:.2%})"
                anomalies.append(
                    {
                        "profile": p,
                        "scope": scope,
                        "series": a["series"] if scope == "sleeve" else "meta",
                        "kind": "impossible value",
                        "dates": a["date"],
                        "detail": a["reason"] + value,
                    }
                )
    return Analysis(
        periods_per_year=ppy,
        calendar=cal,
        performance=perf,
        effective_sleeves={p: effective_number(data.weights[p]["weights"]) for p in data.risk_profiles},
        tournament=tournament(perf),
        diversification=diversification,
        correlation=corr,
        anomalies=sorted(anomalies, key=lambda x: x["kind"] != "impossible value"),  # errors first
    )


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Heading:
    """A heading of ``level`` 1-3."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A paragraph; ``tone`` ("", "pass", "fail", "warn") only colours the HTML."""

    text: str
    tone: str = ""


@dataclass(frozen=True)
class Table:
    """``align`` holds one of "l" / "r" per column; ``tones`` one tone per row (or empty)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str
    tones: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    """Figure ``name`` of :data:`FIGURES`: a link in Markdown, a data URI in HTML."""

    name: str
    title: str


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2%}"


def _num(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _performance_blocks(data: NodeData, a: Analysis) -> list:
    rows = []
    for p in data.risk_profiles:
        m = a.performance[p]
        rows.append(
            (p, _pct(m["ann_return"]), _pct(m["volatility"]), _num(m["sharpe"]), _num(m["sortino"]),
             _pct(m["max_drawdown"]), _num(m["calmar"]), _num(a.effective_sleeves[p]),
             f"{m['start']} .. {m['end']}", str(m["n_obs"]))
        )
    blocks = [
        Heading(2, "Headline (out of sample)"),
        Para(
            "Out-of-sample walk-forward returns of the meta portfolio. Annualized return is "
            "time-weighted and geometric; Sharpe and Sortino use a zero risk-free rate (Sortino: "
            f"downside deviation below 0); annualization uses {a.calendar}. Effective number of "
            "sleeves is 1 / sum(w^2) of the current allocation."
        ),
        Table(
            ("risk profile", "ann. return", "volatility", "Sharpe", "Sortino", "max drawdown", "Calmar",
             "eff. sleeves", "period", "obs"),
            tuple(rows),
            "lrrrrrrrlr",
        ),
        Heading(2, "Tournament"),
        Para("Risk profiles ranked by out-of-sample Sharpe ratio."),
        Table(
            ("rank", "risk profile", "Sharpe", "ann. return", "volatility", "max drawdown"),
            tuple(
                (str(t["rank"]), t["profile"], _num(t["sharpe"]), _pct(t["ann_return"]), _pct(t["volatility"]),
                 _pct(t["max_drawdown"]))
                for t in a.tournament
            ),
            "rlrrrr",
            tuple("pass" if t["rank"] == 1 else "" for t in a.tournament),
        ),
    ]
    if a.anomalies:
        n_bad = sum(x["kind"] == "impossible value" for x in a.anomalies)
        blocks.append(
            Para(
                f"WARNING: {n_bad} impossible values and {len(a.anomalies) - n_bad} rolling-window episodes beyond "
                "the plausibility thresholds; each is listed under Anomalies at the end.",
                "warn",
            )
        )
    return blocks


def _anomaly_blocks(a: Analysis, windows: list[int]) -> list:
    noise = math.sqrt(a.periods_per_year / min(windows))
    blocks = [
        Heading(2, "Anomalies"),
        Para(
            f"Checked: rolling windows of {', '.join(map(str, windows))} periods (the walk-forward test "
            f"window) of the meta stream and of every sleeve, for |Sharpe| > {MAX_ABS_SHARPE:g} or annualized "
            f"volatility > {MAX_VOLATILITY:.0%}; and impossible values: returns <= -100%, a compounded wealth "
            "<= 0 (a drawdown beyond -100%), non-finite returns. Every finding is listed; overlapping "
            "flagged windows form one episode. The impossible values are errors in the data or the "
            f"pipeline. A {min(windows)}-period Sharpe is noisy (sampling error about {noise:.1f} annualized), "
            "so a steady rally can cross the Sharpe threshold: read those rows as warnings to check."
        ),
    ]
    if not a.anomalies:
        return [*blocks, Para("None found.", "pass")]
    bad = [x["kind"] == "impossible value" for x in a.anomalies]
    return [
        *blocks,
        Para(
            f"{sum(bad)} impossible values, {len(bad) - sum(bad)} rolling-window episodes.",
            "fail" if any(bad) else "warn",
        ),
        Table(
            ("risk profile", "scope", "series", "check", "dates", "detail"),
            tuple((x["profile"], x["scope"], x["series"], x["kind"], x["dates"], x["detail"]) for x in a.anomalies),
            "llllll",
            tuple("fail" if b else "warn" for b in bad),
        ),
    ]


def _diversification_blocks(data: NodeData, a: Analysis) -> list:
    rows, tones = [], []
    for p in data.risk_profiles:
        d = a.diversification[p]
        rows.append(
            (p, _pct(d["meta_volatility"]), d["least_volatile"], _pct(d["least_volatility"]),
             "PASS" if d["passed"] else "FAIL", str(d["n_obs"]))
        )
        tones.append("pass" if d["passed"] else "fail")
    blocks = [
        Heading(2, "Diversification"),
        Para(
            "Check: the meta portfolio's annualized volatility is below that of its least volatile "
            "sleeve, both measured on the meta stream's out-of-sample dates."
        ),
        Table(("risk profile", "meta volatility", "least volatile sleeve", "its volatility", "verdict", "obs"),
              tuple(rows), "lrlrlr", tuple(tones)),
    ]
    for p in data.risk_profiles:
        c = a.correlation[p]
        vols = a.diversification[p]["sleeve_volatilities"]
        blocks += [
            Heading(3, f"Sleeve correlation: {p}"),
            Table(
                ("sleeve", *map(str, c.columns), "volatility"),
                tuple((str(s), *(f"{v:.2f}" for v in c.loc[s]), _pct(vols[str(s)])) for s in c.index),
                "l" + "r" * (len(c.columns) + 1),
            ),
        ]
    return blocks


def _allocation_blocks(data: NodeData, a: Analysis, p: str) -> list:
    rec = data.weights[p]
    lo, hi = rec["bounds"]["min_weight"], rec["bounds"]["max_weight"]
    rows = []
    for sid, w in rec["weights"].items():
        at = "min" if abs(w - lo) < 1e-6 else "max" if abs(w - hi) < 1e-6 else ""
        rows.append((sid, _pct(w), _pct(lo), _pct(hi), at))
    blocks = [
        Heading(3, "Sleeve allocation"),
        Para(
            f"Method {rec.get('method', p)}; bounds [{lo:.2%}, {hi:.2%}] per sleeve; effective number "
            f"of sleeves {a.effective_sleeves[p]:.2f}; fitted on {_fitted(rec)}."
        ),
        Table(("sleeve", "weight", "min", "max", "at bound"), tuple(rows), "lrrrl"),
    ]
    if rec.get("fallback"):
        blocks.append(Para(f"FALLBACK to equal weight: {rec.get('fallback_reason') or 'no reason recorded'}.", "warn"))
    if rec.get("degenerate_bounds"):
        n = len(rec["weights"])
        blocks.append(
            Para(f"DEGENERATE BOUNDS: with {n} sleeves, bounds [{lo:g}, {hi:g}] leave no freedom; "
                 "every feasible allocation is the same.", "warn")
        )
    wf = rec.get("walk_forward") or {}
    if wf:
        blocks.append(
            Para(
                f"Walk-forward at the meta level: train {wf.get('train_window')} / test {wf.get('test_window')} "
                f"periods; {wf.get('windows_succeeded')} of {wf.get('windows_attempted')} windows optimized, "
                f"{wf.get('windows_fallback')} fell back to equal weight.",
                "warn" if wf.get("windows_fallback") else "",
            )
        )
        for err in wf.get("errors") or []:
            blocks.append(Para(f"Walk-forward error: {err}", "warn"))
    ins = rec.get("in_sample_weighted_sum")
    if ins:
        blocks.append(
            Para(
                f"In-sample weighted sum, NOT out of sample ({ins.get('label')}): mean {ins['mean'] * a.periods_per_year:.2%} "
                f"and volatility {ins['std'] * math.sqrt(a.periods_per_year):.2%} a year."
            )
        )
    return blocks


def _fitted(rec: dict) -> str:
    f = rec.get("fitted_on") or {}
    return f"{f.get('start')} .. {f.get('end')} ({f.get('n_obs')} obs)" if f else "n/a"


def _holdings_blocks(data: NodeData, p: str) -> list:
    flat = data.flattened[p]
    rows = sorted(flat["weights"], key=lambda r: -abs(r["weight"]))
    top = rows[:TOP_HOLDINGS]
    return [
        Heading(3, "Top holdings"),
        Para(
            f"Exposure: gross {flat['gross']:.2%}, net {flat['net']:.2%}, long {flat['long']:.2%}, "
            f"short {flat['short']:.2%}. The {len(top)} largest of {len(rows)} positions (flattened to "
            "physical assets; SHORT positions carry a negative net weight)."
        ),
        Table(
            ("symbol", "direction", "weight", "net weight", "contributing sleeves"),
            tuple(
                (r["symbol"], r["direction"], _pct(r["weight"]), _pct(r["net_weight"]),
                 ", ".join(f"{s} {v:.2%}" for s, v in sorted(r["sleeves"].items(), key=lambda kv: -kv[1])))
                for r in top
            ),
            "llrrl",
        ),
    ]


def sections(data: NodeData, a: Analysis) -> dict[str, list]:
    """The report's blocks, per section (keys: :data:`TABLES` and ``"header"``, ``"figures"``)."""
    windows = sorted({_test_window(data, p) for p in data.risk_profiles})
    first = data.weights[data.risk_profiles[0]]
    sleeves = list(first["weights"])
    header = [
        Heading(1, f"Meta-portfolio report: {data.meta_profile}"),
        Para(
            f"Run {data.run_id}, node {'(the run root)' if data.node_path == '.' else data.node_path}. Risk profiles: {', '.join(data.risk_profiles)}. "
            f"Sleeves: {', '.join(sleeves)}. Out-of-sample period {data.stream.index[0].date()} .. "
            f"{data.stream.index[-1].date()} ({len(data.stream)} obs), annualized with {a.calendar}."
        ),
    ]
    per_profile = {"allocation": [], "holdings": []}
    for p in data.risk_profiles:
        per_profile["allocation"] += [Heading(2, p), *_allocation_blocks(data, a, p)]
        per_profile["holdings"] += [Heading(2, p), *_holdings_blocks(data, p)]
    return {
        "header": header,
        "performance": _performance_blocks(data, a),
        "anomalies": _anomaly_blocks(a, windows),
        "diversification": _diversification_blocks(data, a),
        "allocation": per_profile["allocation"],
        "holdings": per_profile["holdings"],
        "figures": [Heading(2, "Figures"), *(Image(n, _FIGURE_TITLES[n]) for n in FIGURES)],
    }


def document(data: NodeData, a: Analysis) -> list:
    """The whole report: headline and tournament (with the anomaly count), diversification,
    per risk profile its allocation and top holdings, the figures, then every anomaly listed."""
    s = sections(data, a)
    blocks = s["header"] + s["performance"] + s["diversification"]
    for p in data.risk_profiles:
        blocks += [Heading(2, p), *_allocation_blocks(data, a, p), *_holdings_blocks(data, p)]
    return blocks + s["figures"] + s["anomalies"]


# --------------------------------------------------------------------------- rendering (pure)


def to_markdown(blocks: list) -> str:
    """Markdown of ``blocks``; images link to ``report_assets/<name>.png``."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [f"**{b.text}**" if b.tone in ("fail", "warn") else b.text, ""]
        elif isinstance(b, Table):
            cells = [[c.replace("|", "\\|") for c in row] for row in (b.header, *b.rows)]
            out.append("| " + " | ".join(cells[0]) + " |")
            out.append("|" + "|".join("---:" if al == "r" else "---" for al in b.align) + "|")
            out += ["| " + " | ".join(row) + " |" for row in cells[1:]]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.title}](report_assets/{b.name}.png)", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
max-width:1100px;margin:2em auto;padding:0 1.2em;background:#fff}
h1{font-size:1.7em;border-bottom:2px solid #2b5797;padding-bottom:.2em}
h2{font-size:1.35em;margin-top:1.8em;border-bottom:1px solid #d6dbe4;padding-bottom:.15em}
h3{font-size:1.1em;margin-top:1.3em;color:#2b5797}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #d6dbe4;padding:3px 9px}th{background:#eef1f6;text-align:left}
tr:nth-child(even) td{background:#f8f9fb}td.r{text-align:right;font-variant-numeric:tabular-nums}
tr.pass td{background:#e8f5e9}tr.fail td{background:#fdecea}tr.warn td{background:#fff4e5}
p.pass{color:#1b5e20;font-weight:600}p.fail{color:#b71c1c;font-weight:600}
p.warn{background:#fff4e5;border-left:4px solid #f57c00;padding:.4em .7em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e6ec}figcaption{color:#555;font-size:.9em}
nav{font-size:.9em;margin:.5em 0 1em}nav a{margin-right:1em}
"""


def to_html(blocks: list, title: str, images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained HTML page of ``blocks``: inline CSS, images as base64 PNG data URIs.

    Parameters
    ----------
    blocks : list of Heading, Para, Table, Image
    title : str
    images : mapping of figure name -> PNG bytes
        Every :class:`Image` block's name must be a key.

    Raises
    ------
    KeyError
        If an image block has no PNG in ``images``.
    """
    esc = html.escape
    images = images or {}
    body, nav, seen = [], [], set()
    for b in blocks:
        if isinstance(b, Heading):
            anchor = base = "s-" + "".join(ch if ch.isalnum() else "-" for ch in b.text.lower())
            while anchor in seen:  # per-profile subsections repeat their titles
                anchor = f"{base}-{len(seen)}"
            seen.add(anchor)
            if b.level == 2:
                nav.append(f'<a href="#{anchor}">{esc(b.text)}</a>')
            body.append(f'<h{b.level} id="{anchor}">{esc(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            cls = f' class="{b.tone}"' if b.tone else ""
            body.append(f"<p{cls}>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(c)}</th>" for c in b.header)
            rows = []
            for i, row in enumerate(b.rows):
                tone = b.tones[i] if i < len(b.tones) and b.tones[i] else ""
                cls = f' class="{tone}"' if tone else ""
                tds = "".join(f'<td class="{al}">{esc(c)}</td>' for c, al in zip(row, b.align, strict=True))
                rows.append(f"<tr{cls}>{tds}</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(b, Image):
            uri = "data:image/png;base64," + base64.b64encode(images[b.name]).decode("ascii")
            body.append(f'<figure><img src="{uri}" alt="{esc(b.title)}"><figcaption>{esc(b.title)}</figcaption></figure>')
    if len(nav) > 2:
        first_h2 = next(i for i, x in enumerate(body) if x.startswith("<h2"))
        body.insert(first_h2, "<nav>" + "".join(nav) + "</nav>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- figures


def _png(fig) -> bytes:
    """PNG bytes of a figure made by :func:`_figure`: laid out once, drawn once.

    ``savefig`` draws a figure that holds a layout engine twice (the first time only to run
    the engine); here the same constrained-layout solver runs once, then one draw. An axis
    without a label skips matplotlib's label placement, which would measure every tick label
    once more per pass only to place an empty text. The pixels are those of ``savefig`` with
    ``layout="constrained"``; the opaque image is written as RGB at zlib level 3, smaller
    and faster to encode than RGBA at the default level 6.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from PIL import Image

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.label.get_text():
                axis.set_label_coords(0.5, 0.5)  # fixed coordinates: no automatic placement
                axis.label.set_visible(False)
    canvas = FigureCanvasAgg(fig)
    ConstrainedLayoutEngine().execute(fig)
    canvas.draw()
    rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    rgba.convert("RGB").save(buf, format="png", compress_level=3, dpi=(_DPI, _DPI))
    return buf.getvalue()


def _figure(width: float, height: float):
    """An opaque ``width`` x ``height`` inch figure at :data:`_DPI` with no layout engine (:func:`_png` lays it out)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, facecolor="white", layout="none")


def _grid(n: int, width: float = 5.6, height: float = 3.4):
    """A figure with one ``width`` x ``height`` inch panel per risk profile, at most two columns."""
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = _figure(width * cols, height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _date_axis(ax) -> None:
    """Date ticks and percent labels on ``ax``; call it once the lines are plotted."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import FixedFormatter, FixedLocator, PercentFormatter

    locator = AutoDateLocator(maxticks=7)
    concise = ConciseDateFormatter(locator)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(concise)
    # the date ticks depend only on the x limits, which the layout leaves alone: place and
    # label them once instead of in every pass of the layout and the draw over the axis
    ticks = ax.xaxis.get_majorticklocs()
    fixed = FixedFormatter(concise.format_ticks(ticks))
    fixed.set_offset_string(concise.get_offset())
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(fixed)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)


def figures(data: NodeData, a: Analysis) -> dict[str, bytes]:
    """PNG bytes of every figure of :data:`FIGURES` (matplotlib's Agg canvas, no pyplot state).

    Parameters
    ----------
    data : NodeData
    a : Analysis

    Returns
    -------
    dict of name -> bytes

    Notes
    -----
    Most of a report's time is spent here, in matplotlib's per-artist work, so the figures
    avoid the part of it that changes no pixel: titles are placed at ``y=1.0`` (nothing sits
    above the axes, and the automatic placement measures the whole y axis in every layout
    pass), the correlation values stay out of the layout (they lie inside their axes), and
    the date ticks are placed once (:func:`_date_axis`). See also :func:`_png`.
    """
    from matplotlib.ticker import PercentFormatter
    from skfolio.measures import get_cumulative_returns, get_drawdowns

    profiles = data.risk_profiles
    dates = data.stream.index.to_numpy()
    r = data.stream.to_numpy(dtype=float)
    out = {}

    for name, values, ylabel in (
        ("cumulative", get_cumulative_returns(r, compounded=True) - 1.0, "cumulative return"),
        ("drawdowns", get_drawdowns(r, compounded=True), "drawdown"),
    ):
        fig = _figure(9, 4)
        ax = fig.add_subplot()
        for j, p in enumerate(profiles):
            ax.plot(dates, values[:, j], lw=1.3, label=p)
        _date_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(_FIGURE_TITLES[name], fontsize=11, y=1.0)
        ax.legend(fontsize=8, ncols=min(4, len(profiles)))
        out[name] = _png(fig)

    fig, axes = _grid(len(profiles))
    for ax, p in zip(axes, profiles, strict=True):
        sl = data.sleeves[p].loc[data.stream.index.intersection(data.sleeves[p].index)]
        names = _largest({p: data.weights[p]["weights"]}, list(sl.columns))
        cum = get_cumulative_returns(sl[names].to_numpy(dtype=float), compounded=True) - 1.0
        for j, s in enumerate(names):
            ax.plot(sl.index.to_numpy(), cum[:, j], lw=1.0, label=str(s))
        meta = get_cumulative_returns(data.stream[p].to_numpy(dtype=float), compounded=True) - 1.0
        ax.plot(dates, meta, lw=2.0, color="black", label="meta")
        _date_axis(ax)
        ax.set_title(p + _shown(len(names), len(sl.columns)), fontsize=10, y=1.0)
        ax.legend(fontsize=7)
    fig.suptitle(_FIGURE_TITLES["sleeves"], fontsize=11)
    out["sleeves"] = _png(fig)

    every = list(data.weights[profiles[0]]["weights"])
    sleeves = _largest({p: data.weights[p]["weights"] for p in profiles}, every)
    fig = _figure(9, 1.2 + 0.35 * len(sleeves) * max(1, len(profiles) / 2))
    ax = fig.add_subplot()
    height = 0.8 / len(profiles)
    for j, p in enumerate(profiles):
        w = data.weights[p]["weights"]
        ax.barh(np.arange(len(sleeves)) + j * height, [w.get(s, 0.0) for s in sleeves], height=height, label=p)
    bounds = data.weights[profiles[0]]["bounds"]
    for x in (bounds["min_weight"], bounds["max_weight"]):
        ax.axvline(x, ls="--", lw=1, color="grey")
    ax.set_yticks(np.arange(len(sleeves)) + 0.4 - height / 2, sleeves)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(_FIGURE_TITLES["allocation"] + " (dashed)" + _shown(len(sleeves), len(every)), fontsize=11, y=1.0)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    out["allocation"] = _png(fig)

    k = min(len(data.sleeves[profiles[0]].columns), MAX_FIGURE_SLEEVES)
    fig, axes = _grid(len(profiles), width=min(4.0 + 0.35 * k, 7.0), height=min(3.2 + 0.3 * k, 6.5))
    for ax, p in zip(axes, profiles, strict=True):
        names = _largest({p: data.weights[p]["weights"]}, list(a.correlation[p].columns))
        c = a.correlation[p].loc[names, names]
        im = ax.imshow(c.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        labels = [str(s) for s in c.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        if len(labels) <= MAX_FIGURE_SLEEVES:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    v = c.iat[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, in_layout=False,
                            color="white" if abs(v) > 0.6 else "black")
        ax.set_title(p + _shown(len(names), len(a.correlation[p].columns)), fontsize=10, y=1.0)
        fig.colorbar(im, ax=ax, shrink=0.8, use_gridspec=False)
    fig.suptitle(_FIGURE_TITLES["correlation"], fontsize=11)
    out["correlation"] = _png(fig)
    return out


# --------------------------------------------------------------------------- the report of a node


def output_files(node: Node) -> list[Path]:
    """Every file the report of ``node`` writes: the figures and tables, then md and html."""
    return [
        *(node.file("report_figure", asset=n) for n in FIGURES),
        *(node.file("report_table", asset=n) for n in TABLES),
        node.file("report_md"),
        node.file("report_html"),
    ]


def build_report(ctx, node_path: str) -> dict[Path, bytes]:
    """The report of meta node ``node_path``: every file's path and bytes, nothing written.

    Parameters
    ----------
    ctx : RunContext
    node_path : str
        Plan path of a meta node (``"."`` for the run's root).

    Returns
    -------
    dict of Path -> bytes
        In :func:`output_files` order: ``report_assets/<figure>.png``,
        ``report_assets/<table>.html``, ``report.md``, ``report.html`` (self-contained).

    Raises
    ------
    DataError
        If an artifact lacks a risk profile or a walk-forward test window.
    """
    data = load_node(ctx, node_path)
    a = analyse(data)
    pngs = figures(data, a)
    node = ctx.node(node_path)
    title = f"Meta-portfolio report: {data.meta_profile}"
    out: dict[Path, bytes] = {node.file("report_figure", asset=n): pngs[n] for n in FIGURES}
    parts = sections(data, a)
    for n in TABLES:
        blocks = parts["header"] + parts[n]
        out[node.file("report_table", asset=n)] = to_html(blocks, f"{title}: {n}").encode()
    blocks = document(data, a)
    out[node.file("report_md")] = to_markdown(blocks).encode()
    out[node.file("report_html")] = to_html(blocks, title, pngs).encode()
    return out
