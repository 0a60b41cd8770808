"""What a stage's outputs depend on besides its artifact inputs: price files, package code, library versions.

The workflow turns these into rule inputs and params, so Snakemake reruns a job when one
changes (its default rerun triggers include ``mtime``, ``input`` and ``params``). The
module imports nothing heavy: the Snakefile calls it for every job while it builds the DAG.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name

#: Package modules whose own source counts but whose imports are followed only within
#: themselves: the ``stages`` modules lazily import every stage's code.
GLUE = frozenset({"stages"})
#: Package modules that never count: they decide where and how a task runs (Ray, the
#: runner), not what it computes.
PLACEMENT = frozenset({"cluster", "orchestration"})

#: Per rule, the ``stages`` module of the function its ``run:`` block calls (its entry point).
STAGE_ENTRY: dict[str, str] = {
    "sleeve": "stages._sleeves",
    "pinned_sleeve": "stages._pins",
    "meta_returns": "stages._meta",
    "meta_optimize": "stages._meta",
    "meta_stream": "stages._meta",
    "flatten": "stages._meta",
    "resolved_manifest": "stages._report",
    "report": "stages._report",
    "rebalance": "stages._rebalance",
    "risk": "stages._risk",
}
#: Per rule, the package modules that compute its outputs; their package imports are
#: followed (see :func:`code_modules`). Besides these and the rule's entry point,
#: ``stages._common`` (the stage context) and ``layout`` (how artifacts are written) count
#: for every rule; ``stages/__init__.py`` only re-exports and counts for none.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "sleeve": ("sleeve", "data"),
    "pinned_sleeve": (),
    "meta_returns": ("compose",),
    "meta_optimize": ("compose",),
    "meta_stream": ("compose",),
    "flatten": ("compose",),
    "resolved_manifest": ("manifest", "run"),
    "report": ("report",),
    "rebalance": ("rebalance",),
    "risk": ("risk", "data", "sleeve"),
}
_COMMON_CODE = ("stages._common", "layout")

#: Per rule, the libraries whose versions can change its numbers or bytes.
_FRAME_LIBS = ("numpy", "pandas", "pyarrow")
_FIT_LIBS = (*_FRAME_LIBS, "scipy", "scikit-learn", "skfolio")
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "sleeve": _FIT_LIBS,
    "meta_returns": _FRAME_LIBS,
    "meta_optimize": _FIT_LIBS,
    "meta_stream": _FRAME_LIBS,
    "flatten": _FRAME_LIBS,
    "pinned_sleeve": _FRAME_LIBS,
    "resolved_manifest": (),
    "report": (*_FIT_LIBS, "matplotlib"),
    "rebalance": _FRAME_LIBS,
    "risk": _FIT_LIBS,
}

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
    return f"skfolio {_version('skfolio')} {data.get('dataset', 'sp500')}"


# --------------------------------------------------------------------------- code


def _module_file(name: str, root: Path) -> list[Path]:
    """Source files of package module ``name`` (dotted, relative to the package); a package gives all of its files."""
    base = root.joinpath(*name.split("."))
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    file = base.with_suffix(".py")
    return [file] if file.is_file() else []


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.+|%s\.?)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)|import[ \t]+%s\.([\w.]+))" % ((__package__,) * 2),
    re.MULTILINE,
)


def _imports(source: str, module: str, is_package: bool) -> set[str]:
    """Package-relative names of the package modules ``module``'s source imports (anywhere in it)."""
    parts = module.split(".") if module else []
    here = parts if is_package else parts[:-1]
    found: set[str] = set()
    for dots, name, names, absolute in _IMPORT.findall(source):
        if absolute:
            found.add(absolute)
            continue
        if dots.startswith("."):
            anchor = here[: len(here) - (len(dots) - 1)] if len(dots) > 1 else here
        else:  # ``from tradingview_scraper[.x] import y``
            anchor = []
        base = [*anchor, *(name.split(".") if name else [])]
        if base:
            found.add(".".join(base))
        for alias in names.strip("()").replace("\n", " ").split(","):
            alias = alias.split("#")[0].split(" as ")[0].strip()
            if alias.isidentifier():  # ``from . import report`` names a module
                found.add(".".join([*base, alias]))
    return found


def code_modules(entries: Sequence[str], root: Path | None = None) -> dict[str, Path]:
    """Every package source file that modules ``entries`` run: themselves and what they import.

    Imports are followed transitively (top-level and inside functions), except out of
    :data:`GLUE` modules, whose imports are followed only within their own package;
    :data:`PLACEMENT` modules do not count.

    Returns
    -------
    dict
        Path relative to the package directory (posix) -> file.
    """
    root = PACKAGE_DIR if root is None else root
    todo, seen, files = list(entries), set(), {}
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] in PLACEMENT:
            continue
        seen.add(name)
        paths = _module_file(name, root)
        top = name.split(".")[0]
        for path in paths:
            rel = path.relative_to(root).as_posix()
            if rel in files:
                continue
            files[rel] = path
            mod = ".".join(path.relative_to(root).with_suffix("").parts)
            is_pkg = path.name == "__init__.py"
            mod = mod.removesuffix(".__init__")
            imported = _imported_modules(path, mod, is_pkg, root)
            todo.extend(m for m in imported if top not in GLUE or m.split(".")[0] == top)
    return dict(sorted(files.items()))


@functools.cache
def _source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _imported_modules(path: Path, module: str, is_package: bool, root: Path) -> tuple[str, ...]:
    """The package modules (that exist) file ``path`` of ``module`` imports; read once per process."""
    names = _imports(path.read_text(encoding="utf-8"), module, is_package)
    return tuple(sorted(n for n in names if _module_file(n, root)))


@functools.cache
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def rule_modules(rule: str) -> dict[str, Path]:
    """The package source files rule ``rule`` runs (see :func:`code_modules`).

    Raises
    ------
    KeyError
        ``rule`` is not a rule of the workflow (see :data:`STAGE_CODE`).
    """
    return code_modules((*_COMMON_CODE, STAGE_ENTRY[rule], *STAGE_CODE[rule]))


@functools.cache
def code_hash(rule: str) -> str:
    """Fingerprint of the code rule ``rule`` runs: its package modules' source and its libraries' versions.

    A rule's params carry it, so editing a module reruns exactly the rules that run it (and
    what depends on their outputs). The bytes count, comments included: telling a comment
    from code would cost a parse of every module per process. Computed once per process,
    like the imports it describes: a process that edited a module without reloading it
    still runs, and so still hashes, the code it imported.

    Raises
    ------
    KeyError
        ``rule`` is not a rule of the workflow (see :data:`STAGE_CODE`).
    """
    digest = hashlib.sha256()
    for rel, path in rule_modules(rule).items():
        digest.update(f"{rel}\0{_source_digest(path)}\n".encode())
    for dist in STAGE_LIBRARIES[rule]:
        digest.update(f"{dist}=={_version(dist)}\n".encode())
    return digest.hexdigest()[:20]
