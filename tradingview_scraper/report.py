"""The human-facing report of a meta node: allocation, holdings and out-of-sample performance."""

from __future__ import annotations

import html as _html

import numpy as np
import pandas as pd

from .layout import read_json, read_parquet

TOP_HOLDINGS = 15


def performance(returns: pd.Series, periods_per_year: int) -> dict:
    """Annualized return (geometric), volatility, Sharpe and max drawdown of a return stream.

    Uses skfolio's portfolio measures for volatility, Sharpe and drawdown.
    """
    from skfolio.measures import max_drawdown, standard_deviation

    r = returns.to_numpy(dtype=float)
    n = len(r)
    growth = float(np.prod(1.0 + r))
    ann_return = growth ** (periods_per_year / n) - 1.0 if n and growth > 0 else float("nan")
    vol = float(standard_deviation(r)) * np.sqrt(periods_per_year)
    sharpe = float(np.mean(r) / np.std(r, ddof=1) * np.sqrt(periods_per_year)) if n > 1 and np.std(r) > 0 else float("nan")
    return {
        "ann_return": ann_return,
        "volatility": vol,
        "sharpe": sharpe,
        "max_drawdown": -float(max_drawdown(r)),
        "n_obs": n,
        "start": returns.index[0].date().isoformat() if n else None,
        "end": returns.index[-1].date().isoformat() if n else None,
    }


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2%}"


def _num(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def build_report(ctx, node_path: str) -> tuple[str, str]:
    """Markdown and self-contained HTML report of meta node ``node_path``."""
    from .data import periods_per_year

    node, spec = ctx.node(node_path), ctx.spec(node_path)
    stream = read_parquet(node.file("returns"))
    ppy = periods_per_year(stream.index)
    lines = [
        f"# Meta-portfolio report: {spec.profile}",
        "",
        f"Run `{ctx.run_id}`, node `{node_path}`, risk profiles: {', '.join(ctx.plan.risk_profiles)}.",
        f"Sleeves: {', '.join(spec.config['sleeve_ids'])}. Sleeve weight bounds: "
        f"[{spec.config['meta_allocation']['min_weight']}, {spec.config['meta_allocation']['max_weight']}].",
        f"Performance is out of sample (walk-forward at the meta level, train {spec.config['backtest']['train_window']} / "
        f"test {spec.config['backtest']['test_window']}), annualized with {ppy} periods per year.",
        "",
        "## Performance by risk profile",
        "",
        "| risk profile | ann. return | volatility | Sharpe | max drawdown | period |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p in ctx.plan.risk_profiles:
        m = performance(stream[p], ppy)
        lines.append(
            f"| {p} | {_pct(m['ann_return'])} | {_pct(m['volatility'])} | {_num(m['sharpe'])} | "
            f"{_pct(m['max_drawdown'])} | {m['start']} .. {m['end']} ({m['n_obs']} obs) |"
        )
    for p in ctx.plan.risk_profiles:
        weights = read_json(node.file("meta_weights", profile=p))
        flat = read_json(node.file("flattened", profile=p))
        lines += ["", f"## {p}", "", "| sleeve | weight |", "|---|---:|"]
        for sid, w in weights["weights"].items():
            lines.append(f"| {sid} | {w:.2%} |")
        if weights.get("fallback"):
            lines.append(f"\n**Fallback to equal weight**: {weights.get('fallback_reason')}")
        if weights.get("degenerate_bounds"):
            lines.append("\n**Bounds leave no freedom**: every feasible allocation is the same.")
        lines += [
            "",
            f"Top holdings (gross {flat['gross']:.4f}, net {flat['net']:.4f}, long {flat['long']:.4f}, short {flat['short']:.4f}):",
            "",
            "| symbol | direction | weight | net weight | sleeves |",
            "|---|---|---:|---:|---|",
        ]
        for row in flat["weights"][:TOP_HOLDINGS]:
            contrib = ", ".join(f"{s} {v:.2%}" for s, v in row["sleeves"].items())
            lines.append(
                f"| {row['symbol']} | {row['direction']} | {row['weight']:.2%} | {row['net_weight']:.2%} | {contrib} |"
            )
    md = "\n".join(lines) + "\n"
    return md, _to_html(md, f"Meta-portfolio report: {spec.profile}")


def _to_html(md: str, title: str) -> str:
    """A minimal self-contained HTML rendering of the report's Markdown (headings, tables, text)."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= set("-:") for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{_html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    style = "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{_html.escape(title)}</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"
