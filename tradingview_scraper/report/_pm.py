"""What a portfolio manager acts on: where the risk sits, the rebalance trades, what changed since the last run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..rebalance import other_profile
from ._document import Heading, Para, Section, Table, _pct

if TYPE_CHECKING:
    from ._analysis import Analysis
    from ._node import NodeData

#: Rows of the largest risk contributors, trades and holding changes per risk profile.
TOP_ROWS = 15

PM_FIGURE_TITLES = {
    "risk": "Capital weight beside ex-ante risk share per sleeve (Euler contributions)",
    "changes": "Change since the previous run: sleeve weights and one-way turnover per risk profile",
}


def _share(x: float | None) -> str:
    return "n/a" if x is None else _pct(x)


def _bps(x: float) -> str:
    return f"{x * 1e4:.1f} bp"


# --------------------------------------------------------------------------- risk


def _risk_blocks(data: NodeData, a: Analysis, p: str) -> list:
    risk = data.risk.get(p)
    if risk is None:
        return []
    sl, assets, real = risk["sleeves"], risk["assets"], risk.get("realised")
    win = risk["window"]
    by_sleeve = assets["by_sleeve"]
    weights = data.weights[p]["weights"]
    rows = []
    for sid in weights:
        r, h = sl["rows"].get(sid, {}), by_sleeve.get(sid, {})
        rr = (real or {}).get("sleeves", {}).get(sid, {})
        rows.append(
            (sid, _pct(weights[sid]), _share(r.get("share")), _share(h.get("share")),
             _pct(rr["return"]) if rr else "n/a", _share(rr.get("variance_share")) if rr else "n/a")
        )
    top = assets["rows"][:TOP_ROWS]
    blocks = [
        Heading(3, "Risk contributions"),
        Para(
            "Ex-ante, on the last training window of the meta allocation "
            f"({win['start']} .. {win['end']}, {win['n_obs']} obs): Euler contributions "
            "RC_i = w_i (S w)_i / sigma, which add up to the portfolio volatility sigma; S is skfolio's "
            "empirical covariance. Sleeve view: the meta weights on the sleeves' return streams (what the "
            f"meta optimizer fitted), volatility {sl['annualised_volatility']:.2%} a year. Holdings view: "
            "today's flattened book held over the same common dates (each asset's returns compounded "
            f"between them), volatility {assets['annualised_volatility']:.2%} a year, split back to the sleeves "
            "by their share of each position."
        ),
        Table(
            ("sleeve", "capital weight", "risk share (sleeve streams)", "risk share (holdings)",
             "realised return contribution", "realised variance share"),
            tuple(rows),
            "lrrrrr",
        ),
    ]
    if real:
        blocks.append(
            Para(
                f"Realised, out of sample ({real['start']} .. {real['end']}, {real['n_obs']} obs): each sleeve's "
                "weight times its return on every date of the meta stream; return contributions add up to "
                f"the stream's summed return ({real['total_return']:.2%}), variance contributions cov(x_i, r) to "
                "its variance."
            )
        )
    ppy = math.sqrt(assets["periods_per_year"])
    blocks += [
        Para(f"The {len(top)} largest of {len(assets['rows'])} positions by ex-ante risk contribution (holdings view)."),
        Table(
            ("symbol", "direction", "weight", "risk share", "contribution (ann.)", "stand-alone vol (ann.)"),
            tuple(
                (r["symbol"], r["direction"], _pct(r["weight"]), _share(r["share"]), _pct(r["contribution"] * ppy),
                 _pct(r["standalone_volatility"] * ppy))
                for r in top
            ),
            "llrrrr",
        ),
    ]
    return blocks


# --------------------------------------------------------------------------- rebalance


def _book(reb: dict) -> str:
    cur = reb["current"]
    if cur["kind"] == "previous_run":
        return f"the previous run {cur['run_id']} (its flattened weights)"
    return f"the holdings file {cur['path']} (sha256 {cur['sha256'][:12]})"


def _rebalance_blocks(data: NodeData, a: Analysis, p: str) -> list:
    reb = data.rebalance.get(p)
    if reb is None:
        return []
    if "trading" in reb:  # the paragraph below is about the target; the traded book follows it
        return _rebalance_blocks_of({**reb, **reb["to_target"]}) + _trading_blocks(reb)
    return _rebalance_blocks_of(reb)


def _rebalance_blocks_of(reb: dict) -> list:
    trades = [r for r in reb["rows"] if r["trade"] != 0.0]
    top = trades[:TOP_ROWS]
    shown = (
        f"The {len(top)} largest of {len(trades)} trades (a position that appears or disappears is a trade); "
        f"{len(reb['rows']) - len(trades)} positions are unchanged."
        if trades
        else "No trades: the current book already holds the target weights."
    )
    return [
        Heading(3, "Rebalance"),
        Para(
            f"From {_book(reb)} to this run's flattened weights: {reb['n_trades']} trades, one-way turnover "
            f"{reb['turnover_one_way']:.2%} (half of sum |trade| = {reb['traded']:.2%}), estimated cost "
            f"{_bps(reb['estimated_cost'])} of portfolio value at {_bps(reb['cost_rate'])} per unit traded "
            + (f"(commission {_bps(reb['commission'])} + slippage {_bps(reb['slippage'])}). " if "trading" not in reb
               else "(on average: each position at the frictions of the sleeves whose holdings of it change). ")
            + f"Current book gross "
            f"{reb['current_gross']:.2%}, target gross {reb['target_gross']:.2%}. {shown}"
        ),
        *([] if not top else [Table(
            ("symbol", "direction", "current", "target", "trade", "driven by"),
            tuple(
                (r["symbol"], r["direction"], _pct(r["current_weight"]), _pct(r["target_weight"]),
                 f"{r['trade']:+.2%}", ", ".join(r["drivers"][:3]) or "-")
                for r in top
            ),
            "llrrrl",
        )]),
    ]


# --------------------------------------------------------------------------- trading (issue 24)


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _trading_blocks(reb: dict) -> list:
    """The traded book against the target, the orders and what the band and the budget left untraded."""
    t, o = reb["trading"], reb["orders"]
    budget = "no turnover budget" if t["max_turnover"] is None else f"a one-way turnover budget of {t['max_turnover']:.2%}"
    te = reb.get("tracking_error") or {}
    left = sorted((r for r in reb["rows"] if r["untraded"] != 0.0), key=lambda r: (-abs(r["untraded"]), r["symbol"]))
    gap = o["largest_gap"]
    rows = [r for r in reb["rows"] if r["traded_weight"] != r["current_weight"] or r["untraded"] != 0.0][:TOP_ROWS]
    return [
        Heading(3, "Traded book and orders"),
        Para(
            f"Capital {_money(t['capital'])}, a band of {reb['band_applied']:.2%} (the larger of trading.band and "
            f"min_order / capital) and {budget}: the traded book is the book closest to the target (L1 over the "
            f"weights and the cash) that no position moves by less than the band unless it closes. It trades "
            f"{reb['n_trades']} positions, one-way turnover {reb['turnover_one_way']:.2%} (to the target: "
            f"{reb['to_target']['turnover_one_way']:.2%}), and holds {reb['cash']:.2%} in cash. Left untraded: "
            f"{reb['untraded_one_way']:.2%} one-way"
            + (f", an ex-ante tracking error of {te['annualised']:.2%} a year against the target "
               f"({te['n_obs']} periods to {te['end']})" if te.get("n_obs") else "")
            + "."
        ),
        Para(
            f"{o['n_orders']} orders, notional {_money(o['notional'])}, estimated cost {_money(o['est_cost'])} "
            f"(each order at the frictions of the sleeves behind its position); residual cash "
            f"{_money(o['residual_cash'])}. Every position ends within half a lot of its traded target but those "
            f"whose order fell under min_order ({len(o['dropped'])}); the largest gap is {gap['lots']:.2f} lots"
            + (f" ({gap['symbol']} {gap['direction']})." if gap["symbol"] else ".")
        ),
        *_limits_para(reb.get("book_limits")),
        *([] if not rows else [Table(
            ("symbol", "direction", "current", "target", "traded", "untraded"),
            tuple((r["symbol"], r["direction"], _pct(r["current_weight"]), _pct(r["target_weight"]),
                   _pct(r["traded_weight"]), f"{r['untraded']:+.2%}") for r in rows),
            "llrrrr",
        )]),
        *([] if not o["orders"] else [Table(
            ("symbol", "side", "quantity", "price", "price date", "notional", "est. cost"),
            tuple((x["symbol"], x["side"], f"{x['quantity']:g}", f"{x['price']:g}", x["price_date"],
                   _money(x["notional"]), _money(x["est_cost"])) for x in o["orders"][:TOP_ROWS]),
            "llrrlrr",
        )]),
        *([] if not left else [Para(
            "Largest untraded differences: " + ", ".join(f"{r['symbol']} {r['untraded']:+.2%}" for r in left[:5]) + "."
        )]),
    ]  # fmt: skip


def _limits_para(lim: dict | None) -> list:
    """The book limits the traded book holds (issue 24 with the limits of issue 23), tightest first (a slack
    a rounding below 0, within the 1e-12 the book is held to, shows as 0)."""
    if not lim:
        return []
    tight = sorted(lim["traded"], key=lambda c: (c["slack"], c["limit"], c["key"]))[:3]
    broke = lim["current_breaks"]
    return [Para(
        f"The traded book holds the root's book limits (meta_allocation.book, {len(lim['traded'])} checks); the "
        "tightest: " + ", ".join(f"{c['limit']} {c['key']} {c['value']:.2%} (slack {max(c['slack'], 0.0):.2%})" for c in tight)
        + (f". The current book breaks {len(broke)}: " + "; ".join(broke[:3]) if broke else "") + "."
    )]  # fmt: skip


# --------------------------------------------------------------------------- changes


def _changes_blocks(data: NodeData, a: Analysis) -> list:
    prev = {p: r for p, r in data.rebalance.items() if r["current"]["kind"] == "previous_run"}
    if not prev:
        return []
    run = next(iter(prev.values()))["current"]["run_id"]
    summary, sleeves, holdings = [], [], []
    for p, reb in prev.items():
        sw = reb["sleeve_weights"] or {}
        big = max(sw.items(), key=lambda kv: abs(kv[1]["change"]), default=None)
        summary.append(
            (p, _pct(reb["turnover_one_way"]), _bps(reb["estimated_cost"]), str(reb["n_trades"]),
             f"{big[0]} {big[1]['change']:+.2%}" if big and abs(big[1]["change"]) >= 5e-5 else "none")
        )
        for sid, v in sw.items():
            sleeves.append((p, sid, _pct(v["previous"]), _pct(v["target"]), f"{v['change']:+.2%}"))
        for r in reb["rows"][:5]:
            if r["trade"] != 0.0:
                holdings.append((p, r["symbol"], r["direction"], _pct(r["current_weight"]), _pct(r["target_weight"]),
                                 f"{r['trade']:+.2%}"))
    first = next(iter(prev.values()))
    other = first["current"].get("meta_profile") not in (None, first.get("meta_profile"))
    return [
        Heading(2, f"Changes since run {run}"),
        *([Para("WARNING: " + other_profile(run, first["current"]["meta_profile"], first["meta_profile"]) + ".", "warn")]
          if other else []),
        Para(
            f"This run against the previous run {run} of {next(iter(prev.values()))['current'].get('meta_profile')}: "
            "one-way turnover and estimated cost of moving from its flattened weights to this run's, per risk profile."
        ),
        Table(("risk profile", "one-way turnover", "est. cost", "trades", "largest sleeve change"),
              tuple(summary), "lrrrl"),
        Heading(3, "Sleeve weights"),
        Table(("risk profile", "sleeve", "previous", "now", "change"), tuple(sleeves), "llrrr"),
        Heading(3, "Largest holding changes"),
        Para("The five largest trades per risk profile."),
        Table(("risk profile", "symbol", "direction", "previous", "now", "change"), tuple(holdings), "lllrrr"),
    ]


#: The portfolio manager's sections: risk and rebalance join each risk profile's group (after
#: allocation and holdings), the changes are one node-wide section. Rebalance and changes
#: exist only with a current book, so they have no stand-alone page (their numbers are in
#: ``rebalance_<profile>.json``).
PM_SECTIONS: list[Section] = [
    Section("risk", per_profile=_risk_blocks),
    Section("rebalance", per_profile=_rebalance_blocks, table=False),
    Section("changes", blocks=_changes_blocks, table=False),
]


# --------------------------------------------------------------------------- figures


def _placeholder(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def pm_figures(data: NodeData, render) -> dict[str, bytes]:
    """PNG bytes (``render(fig)``) of the ``risk`` and ``changes`` figures (a note in the figure when there is nothing to show)."""
    from matplotlib.ticker import PercentFormatter

    from ._figures import _figure, _grid, _shown, largest_sleeves

    profiles = data.risk_profiles
    out = {}
    every = list(data.weights[profiles[0]]["weights"])
    names = largest_sleeves({p: data.weights[p]["weights"] for p in profiles}, every)
    fig, axes = _grid(len(profiles), height=1.4 + 0.45 * len(names))
    handles = ([], [])
    for ax, p in zip(axes, profiles, strict=True):
        risk = data.risk.get(p)
        if risk is None:
            _placeholder(ax, f"{p}: no risk decomposition")
            continue
        y = np.arange(len(names))
        series = (
            ("capital weight", [data.weights[p]["weights"].get(s, 0.0) for s in names]),
            ("risk share, sleeve streams", [risk["sleeves"]["rows"].get(s, {}).get("share") or 0.0 for s in names]),
            ("risk share, holdings", [risk["assets"]["by_sleeve"].get(s, {}).get("share") or 0.0 for s in names]),
        )
        h = 0.8 / len(series)
        for j, (label, values) in enumerate(series):
            ax.barh(y + j * h, values, height=h, label=label)
        ax.set_yticks(y + h, names, fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(p + _shown(len(names), len(every)), fontsize=10, y=1.0)
        handles = ax.get_legend_handles_labels()
    if data.risk:
        fig.legend(*handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(PM_FIGURE_TITLES["risk"], fontsize=11)
    out["risk"] = render(fig)

    fig = _figure(11, 1.6 + 0.4 * max(len(names), len(profiles)))
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    prev = {p: r for p, r in data.rebalance.items() if r.get("sleeve_weights")}
    if prev:
        y = np.arange(len(names))
        h = 0.8 / len(prev)
        for j, (p, reb) in enumerate(prev.items()):
            left.barh(y + j * h, [reb["sleeve_weights"].get(s, {}).get("change", 0.0) for s in names], height=h, label=p)
        left.set_yticks(y + 0.4 - h / 2, names, fontsize=8)
        left.invert_yaxis()
        left.axvline(0.0, color="black", lw=0.8)
        left.xaxis.set_major_formatter(PercentFormatter(1.0))
        left.grid(axis="x", alpha=0.3)
        left.legend(fontsize=7)
        left.set_title("sleeve weight change (now - previous)", fontsize=10, y=1.0)
    else:
        _placeholder(left, "no previous run given (--previous-run RUN_ID)")
    if data.rebalance:
        ps = [p for p in profiles if p in data.rebalance]
        right.bar(ps, [data.rebalance[p]["turnover_one_way"] for p in ps], color="tab:grey")
        right.yaxis.set_major_formatter(PercentFormatter(1.0))
        right.tick_params(axis="x", labelrotation=30, labelsize=8)
        right.grid(axis="y", alpha=0.3)
        right.set_title("one-way turnover to the target", fontsize=10, y=1.0)
    else:
        _placeholder(right, "no current book given (--previous-run or --holdings)")
    fig.suptitle(PM_FIGURE_TITLES["changes"], fontsize=11)
    out["changes"] = render(fig)
    return out
