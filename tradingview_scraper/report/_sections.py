"""The report's sections, in order: warning lines (configuration warnings, data-quality findings, risk fallbacks, anomalies; only when there are some), headline and tournament, diversification, allocation and holdings per risk profile, figures, anomalies."""

from __future__ import annotations

import json
import math

from ..meta import compounded_note
from ._analysis import Analysis
from ._anomalies import FALSE_ALARMS, TAIL_DF
from ._document import Heading, Image, Para, Section, Table, _num, _pct, assemble
from ._figures import _FIGURE_TITLES, FIGURES
from ._node import NodeData
from ._pm import PM_SECTIONS

#: Rows of the top-holdings table per risk profile.
TOP_HOLDINGS = 15


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
    return blocks


def _data_banner(data: NodeData) -> list:
    """One warning line per data-quality finding let through and per risk fallback, naming the symbol and dates."""
    blocks = [
        Para(
            f"DATA WARNING: sleeve {f['sleeve']!r}, {f['check']} ({f['start']} .. {f['end']}): {f['message']} "
            f"(let through by health.data_quality.{f['check']} = warn).",
            "warn",
        )
        for f in data.data_quality
    ]
    fallbacks: dict[str, list[str]] = {}
    for p in data.risk_profiles:
        for f in data.risk.get(p, {}).get("fallbacks", []):
            who = f"sleeve {f['sleeve']!r}" if f["scope"] == "sleeve" else f"{f['symbol']} {f['direction']} (sleeve {f['sleeve']!r})"
            fallbacks.setdefault(f"{who}: {f['reason']}", []).append(p)
    blocks += [
        Para(f"RISK FALLBACK ({', '.join(ps)}): {text}; see risk_<profile>.json, fallbacks.", "warn")
        for text, ps in fallbacks.items()
    ]
    return blocks


def _banner(data: NodeData, a: Analysis) -> list:
    """The warnings at the top: the run's configuration warnings, data-quality findings, risk
    fallbacks, and one line naming every series with an anomaly; nothing on clean data."""
    top = [Para(f"WARNING: {w}", "warn") for w in data.warnings] + _data_banner(data)
    if not a.anomalies:
        return top
    where: dict[tuple[str, str], list[str]] = {}
    for x in a.anomalies:
        profiles = where.setdefault((x["scope"], x["series"]), [])
        if x["profile"] not in profiles:
            profiles.append(x["profile"])
    n_err = sum(x["severity"] == "error" for x in a.anomalies)
    named = "; ".join(
        (f"sleeve {series}" if scope == "sleeve" else "meta stream") + f" ({', '.join(ps)})"
        for (scope, series), ps in sorted(where.items(), key=lambda kv: kv[0][0] != "sleeve")  # sources first
    )
    return [
        *top,
        Para(
            f"WARNING: {len(a.anomalies)} anomalies ({n_err} errors, {len(a.anomalies) - n_err} warnings) in "
            f"{named}; each is listed under Anomalies at the end.",
            "fail" if n_err else "warn",
        )
    ]


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}} .. {hi:{fmt}}"


def _anomaly_blocks(data: NodeData, a: Analysis) -> list:
    used = [t for p in data.risk_profiles for t in a.thresholds[p].values()]
    cutoffs = [t["jump_cutoff"] for t in used if t["n_obs"]]
    with_zeros = [t for t in used if t["zero_share"] > 0]
    stale = (
        f"here {_span([t['stale_run'] for t in with_zeros], 'd')} for the {len(with_zeros)} series with exact zeros"
        if with_zeros else "no series has an exact zero return"
    )
    blocks = [
        Heading(2, "Anomalies"),
        Para(
            "Checked, for the meta stream and every sleeve of every risk profile: impossible values "
            "(non-finite returns, returns <= -100%) and broken wealth paths (dates not strictly "
            "increasing, a compounded wealth <= 0): errors in the data or the computation. Jumps: a "
            "return whose robust z-score (r - median) / (1.4826 * MAD) of its own series is beyond a "
            f"cutoff that grows with the series' length n: the |z| that a clean series of Student-t "
            f"returns with {TAIL_DF} degrees of freedom (the fat tails of daily asset returns) exceeds "
            f"with probability {FALSE_ALARMS:g} over n returns; here |z| > "
            f"{_span(cutoffs, '.0f') if cutoffs else 'n/a'} for n = {_span([t['n_obs'] for t in used], 'd')}. "
            "Stale prices: a run of exactly-zero returns at least k long, k the shortest run that zeros "
            f"arriving independently at the series' own rate would produce less than {FALSE_ALARMS:g} "
            f"times; {stale}. Jumps and stale runs are warnings: check the data of the series named."
        ),
    ]
    if not a.anomalies:
        blocks.append(Para("None found.", "pass"))
    else:
        bad = [x["severity"] == "error" for x in a.anomalies]
        blocks += [
            Para(f"{sum(bad)} errors, {len(bad) - sum(bad)} warnings.", "fail" if any(bad) else "warn"),
            Table(
                ("risk profile", "scope", "series", "check", "dates", "detail"),
                tuple((x["profile"], x["scope"], x["series"], x["check"].value, x["dates"], x["detail"])
                      for x in a.anomalies),
                "llllll",
                tuple("fail" if b else "warn" for b in bad),
            ),
        ]
    rows = tuple(
        (p, s, str(t["n_obs"]), _pct(t["median"], 3), _pct(t["mad"], 3), _num(t["jump_cutoff"], 0),
         _pct(t["zero_share"]), str(t["stale_run"]))
        for p in data.risk_profiles for s, t in a.thresholds[p].items()
    )
    return [
        *blocks,
        Heading(3, "Thresholds per series"),
        Table(("risk profile", "series", "obs", "median", "MAD", "jump cutoff |z|", "zero returns", "stale run"),
              rows, "llrrrrrr"),
    ]


def _diversification_blocks(data: NodeData, a: Analysis) -> list:
    rows = []
    for p in data.risk_profiles:
        d = a.diversification[p]
        rows.append(
            (p, _num(d["effective_sleeves"]), _num(d["independent_bets"]), _num(d["diversification_ratio"]),
             _pct(d["volatility"]), _pct(d["weighted_volatility"]), str(d["n_obs"]))
        )
    blocks = [
        Heading(2, "Diversification"),
        Para(
            "Each risk profile's current sleeve weights, measured on the sleeves' returns over the meta "
            "stream's out-of-sample dates. Effective sleeves: 1 / sum(w^2), from the capital weights "
            "alone. Diversification ratio: the weighted average of the sleeves' volatilities over the "
            "volatility of the weighted sleeves: 1 when the sleeves move as one, higher the more they "
            "offset. Independent bets: its square, the effective number of independent bets held "
            "(Choueifaty, Froidure and Reynier 2013): 2 for two uncorrelated sleeves of equal volatility "
            "held equally, 1 for sleeves that move as one. "
            "Correlations and volatilities below are on the same dates (sample statistics)."
        ),
        Table(
            ("risk profile", "eff. sleeves", "independent bets", "diversification ratio", "volatility at these weights",
             "weighted sleeve volatility", "obs"),
            tuple(rows),
            "lrrrrrr",
        ),
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
            f"Method {_method(rec, p)}; bounds [{lo:.2%}, {hi:.2%}] per sleeve; effective number "
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


def _method(rec: dict, p: str) -> str:
    """The allocation method's name, and for a risk profile defined as an estimator its definition."""
    est = rec.get("estimator")
    if not est:
        return str(rec.get("method", p))
    return f"{rec.get('method', p)} (estimator {est['estimator']}, params {json.dumps(est['params'], sort_keys=True)})"


def _fitted(rec: dict) -> str:
    f = rec.get("fitted_on") or {}
    return f"{f.get('start')} .. {f.get('end')} ({f.get('n_obs')} obs)" if f else "n/a"


def _holdings_blocks(data: NodeData, a: Analysis, p: str) -> list:
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
        *_book_limit_blocks(flat),
    ]


def _book_limit_blocks(flat: dict) -> list:
    """The book against its limits (``flattened_<p>.json`` ``book_limits``): nothing for a node without limits."""
    rec = flat.get("book_limits")
    if not rec:
        return []
    win = rec["windows"]
    dist = rec.get("projection_distance")
    blocks = [
        Heading(3, "Book limits"),
        Para(
            f"Limits on this book ({json.dumps(rec['limits'], sort_keys=True)}) are held in every walk-forward "
            f"window and in the live allocation: {len(rec['checks'])} checks, {len(rec['binding'])} binding. "
            f"The live allocation was moved {0.0 if dist is None else dist:.4f} (Euclidean distance of the sleeve "
            f"weights) onto the limits; {win['projected']} of {win['fitted']} fitted windows were moved "
            f"(at most {win['max_projection_distance']:.4f})."
        ),
    ]
    if win["infeasible"]:
        blocks.append(
            Para(f"INFEASIBLE in {len(win['infeasible'])} windows (no allocation meets the limits; they fell back "
                 f"and count as failures): {', '.join(win['infeasible'][:10])}.", "warn")  # fmt: skip
        )
    if rec["binding"]:
        blocks.append(
            Table(
                ("limit", "on", "value", "bound", "unconstrained", "moved by"),
                tuple(
                    (b["limit"], b["key"], _pct(b["value"]), _pct(b["bound"]),
                     _pct(b["unconstrained"]) if "unconstrained" in b else "n/a",
                     _pct(b["excess"]) if "excess" in b else "n/a")
                    for b in rec["binding"]
                ),
                "llrrrr",
            )  # fmt: skip
        )
    if rec["groups"]:
        blocks.append(
            Table(
                ("group", "net exposure", "min", "max"),
                tuple(
                    (g, _pct(v["net"]), "" if v["min"] is None else _pct(v["min"]), "" if v["max"] is None else _pct(v["max"]))
                    for g, v in rec["groups"].items()
                ),
                "lrrr",
            )
        )
    return blocks


def _header(data: NodeData, a: Analysis) -> list:
    sleeves = list(data.weights[data.risk_profiles[0]]["weights"])
    return [
        Heading(1, f"Meta-portfolio report: {data.meta_profile}"),
        Para(
            f"Run {data.run_id}, node {'(the run root)' if data.node_path == '.' else data.node_path}. Risk profiles: {', '.join(data.risk_profiles)}. "
            f"Sleeves: {', '.join(f'{s} ({data.kinds[s]})' if s in data.kinds else s for s in sleeves)}. Out-of-sample period {data.stream.index[0].date()} .. "
            f"{data.stream.index[-1].date()} ({len(data.stream)} obs), annualized with {a.calendar}. "
            f"{compounded_note(data.calendar)}"
        ),
    ]


def _figure_blocks(data: NodeData, a: Analysis) -> list:
    return [Heading(2, "Figures"), *(Image(n, _FIGURE_TITLES[n]) for n in FIGURES)]


#: The report's sections in the document's order. A new section is one more entry here
#: (and, if it has a stand-alone table, one more output of the ``report`` rule): see
#: docs/report.md, "Adding a section".
SECTIONS: list[Section] = [
    Section("warnings", blocks=_banner, table=False),
    Section("performance", blocks=_performance_blocks),
    Section("diversification", blocks=_diversification_blocks),
    Section("allocation", per_profile=_allocation_blocks),
    Section("holdings", per_profile=_holdings_blocks),
    *PM_SECTIONS,
    Section("figures", blocks=_figure_blocks, table=False),
    Section("anomalies", blocks=_anomaly_blocks),
]
#: Stand-alone HTML tables of ``report_assets/`` (``<name>.html``), one per section that has one.
TABLES = tuple(s.name for s in SECTIONS if s.table)


def sections(data: NodeData, a: Analysis) -> dict[str, list]:
    """The report's blocks, per section (keys: :data:`TABLES` and ``"header"``): each section stands alone."""
    return {"header": _header(data, a), **{s.name: s.standalone(data, a) for s in SECTIONS if s.table}}


def document(data: NodeData, a: Analysis) -> list:
    """The whole report: the header, then every section of :data:`SECTIONS` in order."""
    return assemble(_header(data, a), SECTIONS, data, a)
