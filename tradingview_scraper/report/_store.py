"""The runs root's report store: a node's figures kept across runs, keyed by what they show (:func:`figures_key`).

One entry per figures key: each figure's PNG and an index of their digests, written last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..layout import store_entry, write_store_file
from ._analysis import Analysis
from ._figures import figures, figures_key
from ._node import NodeData


def figures_via_store(store: Path | None, data: NodeData, a: Analysis) -> tuple[dict[str, bytes], str]:
    """The figures of ``data``: from the report store when an earlier run drew them from the same
    data, else drawn (and kept there), so a run that recomputed nothing the figures show draws none.

    Parameters
    ----------
    store : Path or None
        The runs root's report store; None (reuse is off): the figures are drawn.
    data : NodeData
        The node's artifacts.
    a : Analysis
        ``analyse(data)``.

    Returns
    -------
    pngs : dict of str -> bytes
        Each figure's PNG, by name.
    how : {"drawn", "reused"}
        Where they come from (the report step's ledger param ``figures``).
    """
    key = figures_key(data) if store is not None else None
    pngs = stored_figures(store, key) if store is not None else None
    if pngs is not None:
        return pngs, "reused"
    pngs = figures(data, a)
    if store is not None:
        _keep_figures(store, key, pngs)
    return pngs, "drawn"


def stored_figures(store: Path, key: str) -> dict[str, bytes] | None:
    """The figures kept under ``key``, each checked against the index's digest; None when any is missing or differs."""
    entry = store_entry(store, key)
    try:
        index = json.loads((entry / "index.json").read_text())
        pngs = {name: (entry / f"{name}.png").read_bytes() for name in index}
    except (OSError, ValueError, TypeError):
        return None
    if any(hashlib.sha256(pngs[name]).hexdigest() != digest for name, digest in index.items()):
        return None
    return pngs


def _keep_figures(store: Path, key: str, pngs: dict[str, bytes]) -> None:
    """Keep the figures drawn for ``key`` (best effort: a store that cannot be written costs only the reuse)."""
    entry = store_entry(store, key)
    try:
        for name, content in pngs.items():
            write_store_file(entry / f"{name}.png", content)
        index = {name: hashlib.sha256(content).hexdigest() for name, content in pngs.items()}
        write_store_file(entry / "index.json", json.dumps(index, sort_keys=True).encode())
    except OSError:
        pass
