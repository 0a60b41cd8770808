"""The report of one meta node: every output's name and bytes, and the ``report`` step."""

from __future__ import annotations

from ._analysis import Analysis, analyse, headline
from ._figures import FIGURES, figures
from ._node import NodeData, node_data
from ._rendering import to_html, to_markdown
from ._sections import TABLES, document, sections
from ._store import figures_via_store


def output_name(kind: str, name: str) -> str:
    """The ``report`` rule's name of an output: ``md``, ``html``, a figure's name, ``<table>_table``."""
    return {"figure": name, "table": f"{name}_table"}.get(kind, kind)


def build_report(
    data: NodeData, analysis: Analysis | None = None, pngs: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """The report of one meta node: every file's bytes by its output name, nothing written.

    Parameters
    ----------
    data : NodeData
        The node's artifacts (:func:`node_data`).
    analysis : Analysis, optional
        ``analyse(data)``, when the caller has it already (the report step records its headline).
    pngs : dict of str -> bytes, optional
        ``figures(data, analysis)``, when the caller has them already (from the report store).

    Returns
    -------
    dict of str -> bytes
        Each figure (``report_assets/<figure>.png``), each
        table (``<table>_table``: ``report_assets/<table>.html``), ``md`` (``report.md``),
        ``html`` (``report.html``, self-contained).

    Raises
    ------
    DataError
        If the meta stream and the sleeves share fewer than 2 dates.
    """
    a = analyse(data) if analysis is None else analysis
    pngs = figures(data, a) if pngs is None else pngs
    title = f"Meta-portfolio report: {data.meta_profile}"
    out: dict[str, bytes] = {output_name("figure", n): pngs[n] for n in FIGURES}
    parts = sections(data, a)
    for n in TABLES:
        blocks = parts["header"] + parts[n]
        out[output_name("table", n)] = to_html(blocks, f"{title}: {n}").encode()
    blocks = document(data, a)
    out["md"] = to_markdown(blocks).encode()
    out["html"] = to_html(blocks, title, pngs).encode()
    return out


def node_report(
    node, children: list, run_id: str, profiles: list[str], node_dir, returns, meta_returns: dict, meta_weights: dict,
    flattened: dict, risk: dict, report_store, note: dict, rebalance: dict | None = None,
) -> dict[str, bytes]:  # fmt: skip
    """The ``report`` step: a meta node's ``report.md``, self-contained ``report.html`` and ``report_assets/``, by output name.

    The node's artifacts as :func:`node_data` takes them. ``report_store``: the runs root's
    report store (None: reuse is off). The ledger (``note``) records whether the ``figures``
    were ``drawn`` or ``reused`` from the store (:func:`figures_via_store`) and the report's
    ``headline`` (:func:`headline`).
    """
    data = node_data(node, children, run_id, profiles, node_dir, returns, meta_returns, meta_weights, flattened, risk, rebalance)
    analysis = analyse(data)
    pngs, note["figures"] = figures_via_store(report_store, data, analysis)
    out = build_report(data, analysis, pngs)
    note["headline"] = headline(analysis)
    return out
