"""Fingerprint of the package code a stage function reaches, derived by walking its AST.

The workflow puts :func:`code_hash` in each rule's params, so Snakemake reruns a job when
the code its stage runs changes (comments, docstrings and formatting aside). The module
imports nothing heavy: the Snakefile calls it for every rule while it builds the DAG.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .deps import stat_key
from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name

#: Package subpackages whose code never counts: Ray's, which decides where a sleeve's tasks
#: run, never what they compute (``test_reliability.py::test_two_clean_runs_are_identical``);
#: every rule would otherwise count it through the run context that carries the cluster.
PLACEMENT = frozenset({"cluster"})

#: The unit of a module's statements that bind no name (import-time code); counted whenever
#: anything of the module is.
TOPLEVEL = "<toplevel>"


@dataclass
class _Module:
    """One package module, parsed: its definitions, its import bindings and its import-time code."""

    name: str  # dotted, relative to the package ("" for the package's __init__)
    path: Path
    units: dict[str, list[ast.stmt]] = field(default_factory=dict)  # name -> its statements
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute dotted name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    parts = [PACKAGE, *(module.split(".") if module else [])]
    here = parts if is_package else parts[:-1]
    base = here[: len(here) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def _bindings(stmts: Iterable[ast.stmt], module: str, is_package: bool) -> dict[str, tuple[str, str | None]]:
    """Name -> (absolute module, attribute or None) of the import statements in ``stmts`` (nested ones too)."""
    out: dict[str, tuple[str, str | None]] = {}
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        out[alias.asname] = (alias.name, None)
                    else:
                        top = alias.name.split(".")[0]
                        out[top] = (top, None)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.level, node.module)
                for alias in node.names:
                    if alias.name != "*":
                        out[alias.asname or alias.name] = (base, alias.name)
    return out


def _docstring(node: ast.AST) -> bool:
    body = getattr(node, "body", None)
    first = body[0] if isinstance(body, list) and body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


@functools.cache
def _parse(path: Path, key: str | None) -> _Module:
    """Parse package file ``path`` (``key``: its stat key, so an edited file is parsed anew), docstrings dropped."""
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    is_package = rel.name == "__init__"
    name = ".".join(rel.parts[:-1] if is_package else rel.parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    mod = _Module(name, path)
    for stmt in tree.body[1:] if _docstring(tree) else tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            mod.imports.update(_bindings([stmt], name, is_package))
            continue
        test = getattr(stmt, "test", None)
        if isinstance(stmt, ast.Try) or (isinstance(stmt, ast.If) and not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")):
            mod.imports.update(_bindings([stmt], name, is_package))
        names: list[str] = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [stmt.name]
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        for n in names or [TOPLEVEL]:
            mod.units.setdefault(n, []).append(stmt)
    return mod


@functools.cache
def _module_file(name: str) -> Path | None:
    """The source file of package module ``name`` (dotted, relative to the package), or None."""
    base = PACKAGE_DIR.joinpath(*name.split(".")) if name else PACKAGE_DIR
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if name and file.is_file() else None


def _module(name: str, keys: dict[str, str | None]) -> _Module | None:
    """Package module ``name``, parsed; ``keys`` memoizes its file's stat key for one walk."""
    path = _module_file(name)
    if path is None:
        return None
    if name not in keys:
        keys[name] = stat_key(path)
    return _parse(path, keys[name])


@functools.cache
def _unit_uses(path: Path, key: str | None, unit: str):
    """The names unit ``unit`` of file ``path`` uses bare, the ``(name, attribute)`` pairs it uses as
    ``name.attribute``, and its own import bindings; once per file version."""
    mod = _parse(path, key)
    attrs: set[tuple[str, str]] = set()
    roots: set[int] = set()
    names: list[ast.Name] = []
    imports: list[ast.stmt] = []
    for stmt in mod.units.get(unit, []):
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                names.append(node)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                attrs.add((node.value.id, node.attr))
                roots.add(id(node.value))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
    local = _bindings(imports, mod.name, path.name == "__init__.py") if imports else {}
    return {n.id for n in names if id(n) not in roots}, attrs, local


class _Reach:
    """The package code (module -> unit names) and third-party packages a stage function reaches."""

    def __init__(self) -> None:
        self.units: dict[str, set[str]] = {}
        self.external: set[str] = set()
        self.keys: dict[str, str | None] = {}  # module -> its file's stat key, taken once per walk
        self._todo: list[tuple[str, str]] = []

    def walk(self, module: str, name: str) -> None:
        self._symbol(module, name)
        while self._todo:
            mod_name, unit = self._todo.pop()
            mod = _module(mod_name, self.keys)
            if mod is None:
                continue
            bare, attrs, local = _unit_uses(mod.path, self.keys[mod_name], unit)
            for n in bare:
                self._name(mod, local, n, None)
            for n, attr in attrs:
                self._name(mod, local, n, attr)

    def _add(self, module: str, unit: str) -> None:
        if module.split(".")[0] in PLACEMENT:
            return
        got = self.units.setdefault(module, set())
        if not got:  # a module reached counts its import-time code too
            got.add(TOPLEVEL)
            self._todo.append((module, TOPLEVEL))
        if unit not in got:
            got.add(unit)
            self._todo.append((module, unit))

    def _whole(self, module: str) -> None:
        mod = _module(module, self.keys)
        if mod is not None:
            for unit in mod.units:
                self._add(module, unit)

    def _name(self, mod: _Module, local: dict, name: str, attr: str | None) -> None:
        """Follow ``name`` (used as ``name.attr`` when ``attr`` is given) as module ``mod`` binds it."""
        binding = local.get(name) or mod.imports.get(name)
        if binding is not None:
            self._import(*binding, attr, 0)
        elif name in mod.units:
            self._add(mod.name, name)

    def _import(self, base: str, imported: str | None, attr: str | None, depth: int) -> None:
        """Follow ``from base import imported`` (``import base`` when ``imported`` is None), used as ``.attr`` if given."""
        if base != PACKAGE and not base.startswith(PACKAGE + "."):
            top = base.split(".")[0]
            if top and top not in sys.stdlib_module_names:
                self.external.add(top)
            return
        module = base[len(PACKAGE) + 1 :]
        if imported is not None:
            sub = f"{module}.{imported}" if module else imported
            mod = _module(module, self.keys)
            if _module_file(sub) is None or (mod is not None and (imported in mod.units or imported in mod.imports)):
                self._symbol(module, imported, depth)
                return
            module = sub
        if attr is None:  # a package module used bare counts whole
            self._whole(module)
        else:
            self._symbol(module, attr)

    def _symbol(self, module: str, name: str, depth: int = 0) -> None:
        """Definition ``name`` of package module ``module``, followed through re-exports."""
        mod = _module(module, self.keys)
        if mod is None:
            return
        if name in mod.units:
            self._add(module, name)
        elif name in mod.imports and depth < 20:
            self._add(module, TOPLEVEL)  # the re-exporting module counts (it decides where the name comes from)
            self._import(*mod.imports[name], None, depth + 1)
        elif _module_file(f"{module}.{name}" if module else name) is not None:
            self._whole(f"{module}.{name}" if module else name)
        else:  # bound some other way (a loop, ``globals()``): the whole module counts
            self._whole(module)


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
    """The distributions providing import name ``top``: its namesake, else the ``*.dist-info`` beside
    it whose RECORD lists it (``cvxpy`` is ``cvxpy-base``), else the slow index of every distribution."""
    if _dist_info(top) is not None:
        return (top,)
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


def _entry(func: Callable) -> tuple[str, str]:
    """(package-relative module, top-level name) of a package function."""
    module = getattr(func, "__module__", "") or ""
    qualname = getattr(func, "__qualname__", "") or ""
    if not (module == PACKAGE or module.startswith(PACKAGE + ".")) or not qualname or "<" in qualname:
        raise ConfigError(f"codehash: {func!r} is not a top-level function of package {PACKAGE}")
    return module[len(PACKAGE) + 1 :], qualname.split(".")[0]


def _walk(func: Callable) -> _Reach:
    walk = _Reach()
    walk.walk(*_entry(func))
    return walk


def reached(func: Callable) -> dict[str, set[str]]:
    """The package code stage function ``func`` reaches: module file (relative, posix) -> names of its units.

    A unit is a module-level definition (function, class, assignment) or :data:`TOPLEVEL`.
    Raises ConfigError when ``func`` is not a top-level function of the package.
    """
    walk = _walk(func)
    return {
        _module_file(m).relative_to(PACKAGE_DIR).as_posix(): units
        for m, units in sorted(walk.units.items())
        if _module_file(m) is not None
    }


@functools.cache
def _unit_digest(path: Path, key: str | None, unit: str) -> str:
    text = "\n".join(ast.dump(stmt, annotate_fields=False) for stmt in _parse(path, key).units.get(unit, []))
    return hashlib.sha256(text.encode()).hexdigest()


def code_hash(func: Callable) -> str:
    """Fingerprint of the code stage function ``func`` runs: ``"<name>@<digest>"``.

    The digest covers the normalized AST of every package definition ``func`` reaches
    (:func:`reached`; comments, docstrings and formatting aside) and the versions of the
    third-party packages that code imports, with what they require. Files are parsed once
    per process, and again when their stat key changes.

    Raises
    ------
    ConfigError
        ``func`` is not a top-level function of the package.
    """
    walk = _walk(func)
    digest = hashlib.sha256()
    for mod_name in sorted(walk.units):
        path = _module_file(mod_name)
        if path is None:
            continue
        key = walk.keys.get(mod_name) or stat_key(path)
        for unit in sorted(walk.units[mod_name]):
            digest.update(f"{mod_name}:{unit}\0{_unit_digest(path, key, unit)}\n".encode())
    for dist, version in libraries(walk.external).items():
        digest.update(f"{dist}=={version}\n".encode())
    return f"{_entry(func)[1]}@{digest.hexdigest()[:20]}"
