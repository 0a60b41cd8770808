"""The report of one meta node: every output file's path and bytes."""

from __future__ import annotations

from pathlib import Path

from ..layout import Node
from ._analysis import analyse
from ._figures import FIGURES, figures
from ._node import load_node
from ._rendering import to_html, to_markdown
from ._sections import TABLES, document, sections


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
        If an artifact lacks a risk profile, or the meta stream and the sleeves share fewer than 2 dates.
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
