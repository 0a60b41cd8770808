"""The report a portfolio manager reads: out-of-sample performance, allocation, diversification, holdings, anomalies.

The package takes a meta node's artifacts (:func:`node_data`), computes every number
(:func:`analyse`, over the pure metrics and anomaly checks), builds a document of blocks
(:func:`document`), renders it (:func:`to_markdown`, :func:`to_html`) with its figures
(:func:`figures`, kept across runs by :func:`figures_via_store`), and assembles every output file
(:func:`build_report`); :func:`node_report` is the workflow's ``report`` step.
"""

from ._analysis import analyse, headline
from ._anomalies import FALSE_ALARMS, TAIL_DF, Check, anomalies, jump_cutoff, stale_run
from ._build import build_report, node_report, output_name
from ._document import Heading, Image, Para, Table
from ._figures import DPI, FIGURES, MAX_FIGURE_SLEEVES, figures, figures_key, largest_sleeves, png
from ._metrics import calendar, diversification, effective_number, performance, tournament
from ._node import NodeData, node_data
from ._rendering import to_html, to_markdown
from ._sections import TABLES, document
from ._store import figures_via_store, stored_figures

__all__ = [
    "DPI",
    "FALSE_ALARMS",
    "FIGURES",
    "MAX_FIGURE_SLEEVES",
    "TABLES",
    "TAIL_DF",
    "Check",
    "Heading",
    "Image",
    "NodeData",
    "Para",
    "Table",
    "analyse",
    "anomalies",
    "build_report",
    "calendar",
    "diversification",
    "document",
    "effective_number",
    "figures",
    "figures_key",
    "figures_via_store",
    "headline",
    "jump_cutoff",
    "largest_sleeves",
    "node_data",
    "node_report",
    "output_name",
    "performance",
    "png",
    "stale_run",
    "stored_figures",
    "to_html",
    "to_markdown",
    "tournament",
]
