"""The document model: the blocks a report is made of (headings, paragraphs, tables, images) and its sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._analysis import Analysis
    from ._node import NodeData


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


def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}%}"


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"



@dataclass(frozen=True)
class Section:
    """One section of the report, built from the node's data and its analysis.

    Exactly one of ``blocks`` and ``per_profile`` is given. A node-wide section's
    ``blocks(data, a)`` returns its list of blocks. A per-profile section's
    ``per_profile(data, a, profile)`` returns the blocks of one risk profile: the report
    groups consecutive per-profile sections under one level-2 heading per risk profile.

    Parameters
    ----------
    name : str
        The section's name; with ``table``, its stand-alone page is
        ``report_assets/<name>.html`` (which the ``report`` rule of
        ``workflow/rules/report.smk`` lists, with a caption).
    blocks : callable (NodeData, Analysis) -> list, optional
    per_profile : callable (NodeData, Analysis, str) -> list, optional
    table : bool
        Whether the section is also written as a stand-alone HTML page.
    """

    name: str
    blocks: Callable[[NodeData, Analysis], list] | None = None
    per_profile: Callable[[NodeData, Analysis, str], list] | None = None
    table: bool = True

    def __post_init__(self) -> None:
        if (self.blocks is None) == (self.per_profile is None):
            raise ValueError(f"section {self.name!r}: give exactly one of blocks and per_profile")

    def standalone(self, data: NodeData, a: Analysis) -> list:
        """The section on its own: a per-profile section repeats each profile's heading."""
        if self.blocks is not None:
            return self.blocks(data, a)
        return [b for p in data.risk_profiles for b in (Heading(2, p), *self.per_profile(data, a, p))]


def assemble(header: list, sections: list[Section], data: NodeData, a: Analysis) -> list:
    """``header`` then every section in order; consecutive per-profile sections share one heading per profile."""
    out, group = list(header), []

    def flush() -> None:
        for p in data.risk_profiles:
            out.extend([Heading(2, p), *(b for s in group for b in s.per_profile(data, a, p))])
        group.clear()

    for s in sections:
        if s.per_profile is not None:
            group.append(s)
            continue
        if group:
            flush()
        out.extend(s.blocks(data, a))
    if group:
        flush()
    return out
