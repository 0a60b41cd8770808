"""The report's sections, in order: headline and tournament, diversification, allocation and holdings per risk profile, figures, anomalies."""

from __future__ import annotations

import math

from ._analysis import Analysis, _test_window
from ._document import Heading, Image, Para, Section, Table, _num, _pct, assemble
from ._figures import _FIGURE_TITLES, FIGURES
from ._metrics import MAX_ABS_SHARPE, MAX_VOLATILITY
from ._node import NodeData

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
    ]


def _header(data: NodeData, a: Analysis) -> list:
    sleeves = list(data.weights[data.risk_profiles[0]]["weights"])
    return [
        Heading(1, f"Meta-portfolio report: {data.meta_profile}"),
        Para(
            f"Run {data.run_id}, node {'(the run root)' if data.node_path == '.' else data.node_path}. Risk profiles: {', '.join(data.risk_profiles)}. "
            f"Sleeves: {', '.join(sleeves)}. Out-of-sample period {data.stream.index[0].date()} .. "
            f"{data.stream.index[-1].date()} ({len(data.stream)} obs), annualized with {a.calendar}."
        ),
    ]


def _figure_blocks(data: NodeData, a: Analysis) -> list:
    return [Heading(2, "Figures"), *(Image(n, _FIGURE_TITLES[n]) for n in FIGURES)]


def _anomalies(data: NodeData, a: Analysis) -> list:
    return _anomaly_blocks(a, sorted({_test_window(data, p) for p in data.risk_profiles}))


#: The report's sections in the document's order. A new section is one more entry here
#: (and, if it has a stand-alone table, one more output of the ``report`` rule).
SECTIONS: list[Section] = [
    Section("performance", blocks=_performance_blocks),
    Section("diversification", blocks=_diversification_blocks),
    Section("allocation", per_profile=_allocation_blocks),
    Section("holdings", per_profile=_holdings_blocks),
    Section("figures", blocks=_figure_blocks, table=False),
    Section("anomalies", blocks=_anomalies),
]
#: Stand-alone HTML tables of ``report_assets/`` (``<name>.html``), one per section that has one.
TABLES = tuple(s.name for s in SECTIONS if s.table)


def sections(data: NodeData, a: Analysis) -> dict[str, list]:
    """The report's blocks, per section (keys: :data:`TABLES` and ``"header"``): each section stands alone."""
    return {"header": _header(data, a), **{s.name: s.standalone(data, a) for s in SECTIONS if s.table}}


def document(data: NodeData, a: Analysis) -> list:
    """The whole report: the header, then every section of :data:`SECTIONS` in order."""
    return assemble(_header(data, a), SECTIONS, data, a)
