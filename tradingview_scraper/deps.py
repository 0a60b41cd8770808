"""What a stage reads from outside the run, and the digests that say whether a file changed.

The workflow puts a sleeve's price files and their content digest in its rule, so new bytes
rerun the job whatever their mtime; the ledger records artifacts by the same digests. The
module imports nothing heavy: the Snakefile calls it for every job while it builds the DAG.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

#: Absolute path -> (stat key, sha256) of files already hashed (the ledger's records, then the caller's).
Known = dict[str, tuple[str | None, str | None]]

# --------------------------------------------------------------------------- price files


def resolve_against(raw: Path | str, base_dir: Path | str) -> Path:
    """A manifest path resolved against ``base_dir`` (the directory the pipeline runs in)."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def resolve_path(data: Mapping[str, Any], base_dir: Path | str) -> Path:
    """``data["path"]`` resolved against ``base_dir``; ConfigError when it is absent or empty."""
    raw = data.get("path")
    if not isinstance(raw, (str, Path)) or not str(raw):
        raise ConfigError(f"data.path is required for source {data.get('source')!r}, got {raw!r}")
    return resolve_against(raw, base_dir)


def symbol_from_filename(name: str) -> str:
    """Symbol of a TradingView export: ``"BINANCE_BTCUSDT, 1D.csv"`` and ``"BTCUSDT.csv"`` -> ``"BTCUSDT"``."""
    stem = name[:-4] if name.lower().endswith(".csv") else name
    base = stem.split(",", 1)[0].strip()
    if "_" in base:
        base = base.split("_", 1)[1].strip()
    return base or stem


def export_files(directory: Path, files: Mapping[str, str] | None) -> dict[str, Path]:
    """Symbol -> export file of a TradingView directory: ``files`` mapped, else every visible ``*.csv`` by symbol.

    Raises
    ------
    DataError
        The directory holds no export, or two files give the same symbol.
    """
    if files is not None:
        return {sym: directory / name for sym, name in files.items()}
    mapping: dict[str, Path] = {}
    csvs = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith("."))
    if not csvs:
        raise DataError(f"{directory}: no *.csv TradingView exports in this directory")
    for csv in csvs:
        sym = symbol_from_filename(csv.name)
        if sym in mapping:
            raise DataError(
                f"{directory}: files {mapping[sym].name!r} and {csv.name!r} both give symbol "
                f"{sym!r}; keep one or map symbols to files with data.files"
            )
        mapping[sym] = csv
    return dict(sorted(mapping.items()))


def price_files(data: Mapping[str, Any], symbols: Sequence[str] | None, base_dir: Path | str = ".") -> list[Path]:
    """The existing files a sleeve with data block ``data`` and universe ``symbols`` reads, in reading order.

    ``table``: the table; ``tradingview``: the export of each symbol loaded (all when
    ``symbols`` is None); ``skfolio``: none (:func:`dataset_pin` names it). A source that
    cannot be listed lists nothing: the sleeve job, or the pre-flight check, names the file.
    """
    source = data.get("source", "skfolio")
    try:
        if source == "table":
            path = resolve_path(data, base_dir)
            return [path] if path.is_file() else []
        if source == "tradingview":
            directory = resolve_path(data, base_dir)
            files = data.get("files")
            if not directory.is_dir() or (files is not None and not isinstance(files, Mapping)):
                return []
            mapping = export_files(directory, files)
            wanted = list(mapping) if symbols is None else [s for s in symbols if s in mapping]
            return [mapping[s] for s in wanted if mapping[s].is_file()]
    except (ConfigError, DataError, OSError, TypeError):
        return []
    return []


def dataset_pin(data: Mapping[str, Any]) -> str | None:
    """``"skfolio <version> <dataset>"`` for a sleeve on a dataset shipped inside skfolio (which pins it), else None."""
    if data.get("source", "skfolio") != "skfolio":
        return None
    return f"skfolio {importlib.metadata.version('skfolio')} {data.get('dataset', 'sp500')}"


# --------------------------------------------------------------------------- file digests


def stat_key(path: Path | str, device: bool = True) -> str | None:
    """What ``stat`` says about a file (size, mtime, ctime, inode, and device), or None if it is absent.

    Any write, rename or ``touch`` changes the ctime, which user space cannot set back: a file
    whose key equals the one taken when it was hashed still has the hashed bytes.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    return f"{key}:{st.st_dev}" if device else key


def _tree(path: Path | str, of: Callable[[Path], str | None]) -> str:
    """sha256 of the ``relative/posix/path<NUL>of(file)<LF>`` lines of the files below directory ``path``, in path order."""
    root = Path(path)
    lines = (f"{p.relative_to(root).as_posix()}\0{of(p)}\n" for p in sorted(root.rglob("*")) if p.is_file())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def fingerprint(path: Path | str) -> str | None:
    """The ledger's stat record of an artifact: :func:`stat_key` without the device; ``"tree:..."`` for a directory."""
    if os.path.isdir(path):
        return "tree:" + _tree(path, fingerprint)
    return stat_key(path, device=False)


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file's bytes; a directory's is :func:`_tree` of its files' digests.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    if os.path.isdir(path):
        return _tree(path, file_sha256)
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_digest(path: Path | str, known: Known | None = None) -> str | None:
    """:func:`file_sha256` of a file (None if unreadable), or its sha256 in ``known`` while its stat key is the one recorded.

    ``known`` maps an absolute path to ``(stat key, sha256)``: the run's ledger records both
    for every file outside the run that a stage read. A file hashed here is recorded in
    ``known`` too, so a caller that keeps it hashes each version of a file once.
    """
    absolute, key = os.path.abspath(path), stat_key(path)  # stat first: a change while hashing then shows
    known = {} if known is None else known
    stat, sha = known.get(absolute, (None, None))
    if stat is None or sha is None or stat != key:
        try:
            sha = file_sha256(path)
        except OSError:
            return None
        known[absolute] = (key, sha)
    return sha


def content_digest(paths: Iterable[Path | str], known: Known | None = None) -> str:
    """One digest of the names and bytes of ``paths``, each file's by :func:`file_digest` against ``known``.

    An unreadable file counts as ``None``: the job that reads it reports it.
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path}\0{file_digest(path, known)}\n".encode())
    return "sha256:" + digest.hexdigest()
