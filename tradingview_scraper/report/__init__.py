"""The report a portfolio manager reads: out-of-sample performance, allocation, diversification, holdings, anomalies.

The package reads a meta node's artifacts (:func:`load_node`), computes every number
(:func:`analyse`, over the pure metrics), builds a document of blocks (:func:`document`,
:func:`sections`), renders it (:func:`to_markdown`, :func:`to_html`) with its figures
(:func:`figures`), and assembles every output file (:func:`build_report`).
"""

from ._analysis import Analysis, analyse
from ._build import build_report, output_files
from ._document import Heading, Image, Para, Section, Table, assemble
from ._figures import FIGURES, MAX_FIGURE_SLEEVES, figures
from ._metrics import (
    MAX_ABS_SHARPE,
    MAX_VOLATILITY,
    calendar,
    diversification_check,
    effective_number,
    impossible_values,
    performance,
    rolling_anomalies,
    tournament,
)
from ._node import NodeData, load_node
from ._rendering import to_html, to_markdown
from ._sections import SECTIONS, TABLES, TOP_HOLDINGS, document, sections

__all__ = [
    "FIGURES",
    "MAX_ABS_SHARPE",
    "MAX_FIGURE_SLEEVES",
    "MAX_VOLATILITY",
    "SECTIONS",
    "TABLES",
    "TOP_HOLDINGS",
    "Analysis",
    "Heading",
    "Image",
    "NodeData",
    "Para",
    "Section",
    "Table",
    "analyse",
    "assemble",
    "build_report",
    "calendar",
    "diversification_check",
    "document",
    "effective_number",
    "figures",
    "impossible_values",
    "load_node",
    "output_files",
    "performance",
    "rolling_anomalies",
    "sections",
    "tournament",
    "to_html",
    "to_markdown",
]
