"""The run-directory layout and atomic artifact writes (:mod:`._io`): the only package that builds artifact paths.

A run directory (``data/runs/<run_id>/``) is a tree of *nodes*: the root (a meta profile, or
one atomic sleeve) and, below any meta node, ``sleeves/<sleeve_id>/`` (an atomic sleeve or a
nested meta run). Every node exposes the same sleeve interface (``returns.parquet`` plus
per-risk-profile asset weights), so recursion is uniform. :data:`NODE_FILES` names a node's
files; ``docs/artifacts.md`` describes each.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .. import steps
from ..errors import ConfigError
from ._io import (
    atomic_write_bytes,
    dumps_json,
    read_bytes,
    read_json,
    read_parquet,
    read_parquet_metadata,
    remove_artifact,
    remove_partial_writes,
    watch_io,
    write_json,
    write_parquet,
    write_store_file,
)

__all__ = [
    "NODE_FILES", "ROOT", "RUNS_ROOT", "STORE", "Node", "atomic_write_bytes", "check_name", "check_runs_root", "child_path",
    "dumps_json", "literal_files", "new_run_id", "node_at", "node_pattern", "read_bytes", "read_json", "read_parquet",
    "read_parquet_metadata", "refuse_symlink", "regex_literal", "remove_artifact", "remove_partial_writes", "run_dir",
    "run_node", "store_dir", "store_entry", "store_file", "watch_io", "wildcard_like", "write_json", "write_parquet",
    "write_store_file",
]  # fmt: skip

#: Where run directories live, relative to the working directory.
RUNS_ROOT = Path("data") / "runs"

#: The content-addressed store of a runs root (never a run id: run ids start with a letter or digit).
STORE = ".store"

#: File names of a node, relative to the node directory. ``{profile}`` is a risk profile.
NODE_FILES: dict[str, str] = {
    "returns": "returns.parquet",
    "health": "health.json",
    "provenance": "provenance.json",
    "sign_test": "sign_test.json",
    "weights": "weights_{profile}.json",
    "meta_returns": "meta/returns_{profile}.parquet",
    "meta_weights": "meta/weights_{profile}.json",
    "meta_stream": "meta/stream_{profile}.parquet",
    "cluster_tree": "meta/cluster_tree_{profile}.json",
    "flattened": "flattened_{profile}.json",
    "risk": "risk_{profile}.json",
    "rebalance": "rebalance_{profile}.json",
    "resolved": "manifest.resolved.json",
    "report_md": "report.md",
    "report_html": "report.html",
    "report_figure": "report_assets/{asset}.png",
    "report_table": "report_assets/{asset}.html",
    "audit": "audit.jsonl",
    "run_lock": ".run.lock",
    "log": "logs/{stage}.log",
    **steps.FILES,  # the artifacts the steps' table introduces
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is safe as one path component, else raise ConfigError.

    Run ids, sleeve ids and profile names become directory names; they may only use
    letters, digits, ``_``, ``-`` and ``.``, must start with a letter or digit and be at
    most 100 characters, so they can never escape ``data/runs/``.
    """
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise ConfigError(
            f"{what} {value!r} is not a safe name: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return value


def new_run_id() -> str:
    """A fresh run id that sorts by time, e.g. ``20261125-181530-123456``."""
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"


@dataclass(frozen=True)
class Node:
    """Paths of one node of a run tree (the root run directory or a nested sleeve)."""

    dir: Path

    def file(self, name: str, **fields: str) -> Path:
        """Path of artifact ``name`` (a key of NODE_FILES) of this node."""
        return self.dir / NODE_FILES[name].format(**fields)

    def child(self, sleeve_id: str) -> Node:
        """The node of sleeve ``sleeve_id`` inside this node."""
        return Node(self.dir / "sleeves" / check_name(sleeve_id, "sleeve id"))


#: Plan path of a run's root node; children are ``sleeves/<id>`` below their parent.
ROOT = "."


def node_at(run_dir: Path | str, path: str) -> Node:
    """The node of plan path ``path`` (``"."`` or ``"sleeves/a/sleeves/b"``) in ``run_dir``."""
    return Node(Path(run_dir) / path)  # pathlib drops the root's ".": one spelling of each directory


def child_path(parent: str, sleeve_id: str) -> str:
    """Plan path (relative to the run directory) of sleeve ``sleeve_id`` under node ``parent``."""
    name = f"sleeves/{check_name(sleeve_id, 'sleeve id')}"
    return name if parent == ROOT else f"{parent}/{name}"


def run_dir(run_id: str, runs_root: Path | str = RUNS_ROOT) -> Path:
    """Directory of run ``run_id`` under ``runs_root``."""
    return Path(runs_root) / check_name(run_id, "run id")


def refuse_symlink(path: Path | str, what: str) -> Path:
    """Return ``path`` unless it is a symlink: run directories and locks are never followed through links.

    Raises
    ------
    ConfigError
        ``path`` is a symlink (the message names it and its target).
    """
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(
            f"{what} {path} is a symlink (to {os.readlink(path)}); refusing to follow it: "
            "remove the link, or choose another run id"
        )
    return path


def store_dir(runs_root: Path | str, kind: str) -> Path:
    """Directory of the runs root's store of ``kind`` (``"nodes"``: node artifacts reused across runs,
    ``"windows"``: walk-forward window fits reused by a grown history, ``"report"``: report figures)."""
    return Path(runs_root) / STORE / kind


def store_file(store: Path | str, key: str, suffix: str) -> Path:
    """File ``<store>/<key><suffix>`` of a store directory (:func:`store_dir`): one file per key."""
    return Path(store) / (check_name(key, "store key") + suffix)


def store_entry(store: Path | str, key: str) -> Path:
    """Directory ``<store>/<key[:2]>/<key>`` of a store whose entry is several files (a figure and its ``index.json``)."""
    return Path(store) / key[:2] / check_name(key, "store key")


def run_node(run_id: str, runs_root: Path | str = RUNS_ROOT) -> Node:
    """Root node of run ``run_id`` under ``runs_root``."""
    return Node(run_dir(run_id, runs_root))


def check_runs_root(runs_root: Path | str, *, writable: bool = True, run_id: str | None = None) -> Path:
    """Return ``runs_root`` as a Path if run directories can live there, else raise ConfigError.

    A runs root that does not exist yet is fine (the first run creates it) as long as its
    nearest existing ancestor is a directory. Nothing is created or changed.

    Parameters
    ----------
    runs_root : path-like
        The directory of run directories (``--runs-root``, config ``runs_root``).
    writable : bool
        Also require that a run could create its directory there, or write to it where
        ``run_id``'s directory exists (a real run; a dry run only reads).
    run_id : str, optional
        The run: an existing run directory need not be in a writable runs root.

    Raises
    ------
    ConfigError
        ``runs_root`` is not a path, is a file (or another non-directory), lies under a
        file, or (with ``writable``) is in a directory this process may not write to.
    """
    if not isinstance(runs_root, (str, os.PathLike)) or not str(runs_root).strip():
        raise ConfigError(f"runs_root={runs_root!r} is not a path: give a directory (default {RUNS_ROOT})")
    root = Path(runs_root)
    existing = next((p for p in (root, *root.parents) if p.exists() or p.is_symlink()), root)
    if not existing.is_dir():
        where = "is" if existing == root else f"lies under {existing}, which is"
        raise ConfigError(
            f"runs_root {root} {where} not a directory: give a directory for run directories "
            f"(created if missing; default {RUNS_ROOT})"
        )
    own = root / run_id if run_id and existing == root and (root / run_id).is_dir() else None
    if writable and not os.access(own or existing, os.W_OK | os.X_OK):
        if own is not None:
            raise ConfigError(
                f"run directory {own} is not writable by this user: choose another run id or runs root, "
                "or use --dry-run to only read"
            )
        what = "is" if existing == root else f"would be created in {existing}, which is"
        raise ConfigError(
            f"runs_root {root} {what} not writable by this user: give a directory you can write to "
            f"(default {RUNS_ROOT}), or use --dry-run to only read"
        )
    return root


#: What Snakemake reads as a wildcard in a path: ``{name}`` or ``{name,constraint}``
#: (its own syntax; a path may hold other braces, such as ``{`` or ``{a b}``, literally).
_WILDCARD = re.compile(r"\{\s*[.\w]+\s*(?:,(?:[^{}]|\{\d+(?:,\d+)?\})*)?\s*\}")


def wildcard_like(path: Path | str) -> bool:
    """Whether Snakemake would read part of ``path`` as a wildcard (such as ``{profile}``)."""
    return _WILDCARD.search(str(path)) is not None


def regex_literal(text: Path | str) -> str:
    """A regex matching exactly ``text``, usable as a Snakemake wildcard constraint.

    Snakemake embeds a constraint in its ``{name,constraint}`` syntax, which allows no brace
    but a ``{m,n}`` repeat: literal braces are written ``\\x7b`` and ``\\x7d``.
    """
    return re.escape(str(text)).replace("\\{", "\\x7b").replace("\\}", "\\x7d")


def literal_files(files, node_dir: Path | str):
    """An input function's result (a path, a list of them or a dict of either) with each path
    spelled so that Snakemake takes it literally, for the job at ``{node}`` = ``node_dir``.

    Snakemake formats every path an input function returns with the job's wildcards and has
    no escape for braces: ``book_{profile}.csv`` would silently become ``book_hrp.csv``. A path
    without a wildcard-like part is returned as it is; one below ``node_dir`` is spelled
    relative to the ``{node}`` wildcard, whose value Snakemake substitutes verbatim.

    Raises
    ------
    ConfigError
        A path with a wildcard-like part outside ``node_dir``: it has no such spelling (a
        ``{node}/..`` one would need the node's directory to exist before its job runs).
    """
    if isinstance(files, dict):
        return {k: literal_files(v, node_dir) for k, v in files.items()}
    if isinstance(files, list):
        return [literal_files(f, node_dir) for f in files]
    if not wildcard_like(files):
        return str(files)
    rel = os.path.relpath(files, node_dir)
    if wildcard_like(rel) or rel.split(os.sep, 1)[0] == "..":
        raise ConfigError(
            f"{files}: Snakemake would read part of this path as a wildcard and it cannot be reached from "
            f"{node_dir}; use a runs root without '{{name}}'"
        )
    return "{node}" if rel == "." else "{node}/" + Path(rel).as_posix()


def node_pattern(name: str, **fields: str) -> str:
    """A Snakemake path pattern for artifact ``name`` below the ``{node}`` wildcard, ``fields`` filled in."""
    return "{node}/" + (NODE_FILES[name].format(**fields) if fields else NODE_FILES[name])
