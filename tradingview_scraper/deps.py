"""What a stage's outputs depend on besides its artifact inputs and package code: external files' content, libraries.

The workflow turns these into rule inputs and params, so Snakemake reruns a job when one
changes (its rerun triggers include ``input`` and ``params``; ``mtime`` alone misses a
file edited with its old mtime put back). The package code a stage reaches is
:mod:`codehash`'s. The module imports nothing heavy: the Snakefile calls it for every job
while it builds the DAG.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

_TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


# --------------------------------------------------------------------------- price files


def resolve_path(data: Mapping[str, Any], base_dir: Path | str) -> Path:
    """``data["path"]`` resolved against ``base_dir``.

    Raises
    ------
    ConfigError
        ``data["path"]`` is absent or empty.
    """
    raw = data.get("path")
    if not isinstance(raw, (str, Path)) or not str(raw):
        raise ConfigError(f"data.path is required for source {data.get('source')!r}, got {raw!r}")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def symbol_from_filename(name: str) -> str:
    """Symbol of a TradingView export file name.

    ``"BINANCE_BTCUSDT, 1D.csv"`` -> ``"BTCUSDT"`` (the exchange prefix before the
    first ``_`` and the ``, <timeframe>`` suffix are dropped); ``"BTCUSDT.csv"`` ->
    ``"BTCUSDT"``.
    """
    stem = name[:-4] if name.lower().endswith(".csv") else name
    base = stem.split(",", 1)[0].strip()
    if "_" in base:
        base = base.split("_", 1)[1].strip()
    return base or stem


def export_files(directory: Path, files: Mapping[str, str] | None) -> dict[str, Path]:
    """Symbol -> export file of a TradingView directory, sorted by symbol unless ``files`` maps them.

    Without ``files``, every visible ``*.csv`` of ``directory`` is an export named after its
    file (see :func:`symbol_from_filename`).

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
    """The files a sleeve with data block ``data`` and universe ``symbols`` reads its prices from.

    ``table``: the table file; ``tradingview``: the export of each symbol the sleeve loads
    (every export when ``symbols`` is None); ``skfolio``: none (the dataset ships inside
    skfolio: :func:`dataset_pin` names it). A source that cannot be listed (a missing path,
    a bad mapping) lists nothing: the sleeve job, or the pre-flight check, reports it in one
    line naming the file.

    Returns
    -------
    list of Path
        Existing files, in the order the sleeve reads them.
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
    """``"skfolio <version> <dataset>"`` for a sleeve on a skfolio embedded dataset, else None.

    The dataset's rows ship inside the skfolio wheel, so its version pins them.
    """
    if data.get("source", "skfolio") != "skfolio":
        return None
    info = _dist_info("skfolio")
    return f"skfolio {info[0] if info else 'absent'} {data.get('dataset', 'sp500')}"


# --------------------------------------------------------------------------- external files' content


def stat_key(path: Path | str) -> str | None:
    """What ``stat`` says about a file (size, mtime, ctime, inode, device), or None if it is absent.

    Any write, rename or ``touch`` changes the ctime, which user space cannot set back; so
    a file whose key equals the one recorded when it was hashed still has the hashed bytes.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def file_digest(path: Path | str, known: Mapping[str, tuple[str | None, str | None]] | None = None) -> str | None:
    """sha256 of a file's bytes (None if it cannot be read), taken from ``known`` when its stat key matches.

    Parameters
    ----------
    path : path-like
        The file.
    known : mapping, optional
        Absolute path -> ``(stat key, sha256)`` recorded earlier (see :func:`stat_key`): the
        run's ledger records both for every external file a stage read.
    """
    key = os.path.abspath(path)
    if known is not None and key in known:
        stat, sha = known[key]
        if stat is not None and sha is not None and stat == stat_key(path):
            return sha
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def content_digest(
    paths: Iterable[Path | str],
    known: Mapping[str, tuple[str | None, str | None]] | None = None,
    *,
    digest_of: Callable[[str], str | None] | None = None,
) -> str:
    """One digest of the names and bytes of ``paths`` (a rule's params carry it: new bytes rerun the job).

    Each file's sha256 comes from ``digest_of`` when given (a caller's memo), else from
    ``known`` when its stat key is the recorded one (see :func:`file_digest`), else from its
    bytes. An unreadable file counts as ``None``: the job that reads it reports it.
    """
    digest = hashlib.sha256()
    for path in paths:
        sha = digest_of(str(path)) if digest_of is not None else file_digest(path, known)
        digest.update(f"{path}\0{sha}\n".encode())
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------- libraries


@functools.cache
def _dist_info(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(version, names of the distributions it requires, extras aside) of installed distribution ``name``."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    requires = []
    for req in dist.requires or []:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match and "extra ==" not in req.replace("extra==", "extra =="):
            requires.append(match[1])
    return dist.version, tuple(requires)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _import_dists(top: str) -> tuple[str, ...]:
    """The distributions providing import name ``top``.

    Most are named after it; otherwise the ``*.dist-info`` beside the imported package
    whose RECORD lists it (``cvxpy`` is ``cvxpy-base``), and only then the index of every
    installed distribution (slow).
    """
    if _dist_info(top) is not None:
        return (top,)
    import importlib.util

    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None and spec.origin not in (None, "built-in", "frozen") else None
    if origin:
        site = Path(origin).parent.parent if Path(origin).name == "__init__.py" else Path(origin).parent
        for info in sorted(site.glob("*.dist-info")):
            if not _normal(info.name).startswith(_normal(top)):
                continue
            record = info / "RECORD"
            if record.is_file() and f"\n{top}/" in "\n" + record.read_text(encoding="utf-8", errors="replace"):
                return (info.name.split("-")[0],)
    return tuple(importlib.metadata.packages_distributions().get(top, ()))


def libraries(imports: Iterable[str]) -> dict[str, str]:
    """Distribution -> installed version of third-party import names ``imports`` and of what they require."""
    todo = [d for top in imports for d in _import_dists(top)]
    out: dict[str, str] = {}
    while todo:
        name = todo.pop()
        key = _normal(name)
        if key in out:
            continue
        info = _dist_info(name)
        out[key] = info[0] if info is not None else "absent"
        if info is not None:
            todo.extend(info[1])
    return dict(sorted(out.items()))
