"""Fingerprint of the package code a stage function reaches, derived by walking its AST.

The workflow puts :func:`code_hash` in each rule's params, so Snakemake reruns a job when
the code its stage runs changes (comments, docstrings and formatting aside). The module
imports nothing heavy: the Snakefile calls it for every rule while it builds the DAG.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .deps import libraries, stat_key
from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name

# --------------------------------------------------------------------------- code
# A rule's code is what its stage function reaches: the module-level definitions (functions,
# classes, assignments) the function names, followed through imports into the package's
# modules, transitively, plus each reached module's import-time statements. Each counts as
# its normalized AST (no comments, docstrings or formatting); the third-party packages the
# reached code imports count by their versions and those of what they require.


#: Package subpackages whose code never counts: Ray's, which decides where a sleeve's tasks
#: run, never what they compute (a run on Ray and one in-process write the same bytes:
#: ``tests/test_reliability.py::test_two_clean_runs_are_identical``). Without it, every rule
#: would count the cluster through the run context that carries it.
PLACEMENT = frozenset({"cluster"})

#: The name of a module's statements that bind no name (import-time code); counted whenever
#: anything of the module is.
TOPLEVEL = "<toplevel>"


@dataclass
class _Module:
    """One package module, parsed: its definitions, its import bindings and its import-time code."""

    name: str  # dotted, relative to the package ("" for the package's __init__)
    path: Path
    units: dict[str, list[ast.stmt]] = field(default_factory=dict)
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


def _type_checking(stmt: ast.stmt) -> bool:
    test = getattr(stmt, "test", None)
    return isinstance(stmt, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


@functools.cache
def _parse(path: Path, key: str | None) -> _Module:
    """Parse package file ``path`` (``key``: its stat key, so an edited file is parsed anew)."""
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    is_package = rel.name == "__init__"
    name = ".".join(rel.parts[:-1] if is_package else rel.parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _Module(name, path)
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]  # the module docstring
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            mod.imports.update(_bindings([stmt], name, is_package))
            continue
        if isinstance(stmt, (ast.Try, ast.If)) and not _type_checking(stmt):
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


def _module(name: str, keys: dict[str, str | None] | None = None) -> _Module | None:
    """Package module ``name``, parsed; ``keys`` memoizes its file's stat key for one walk."""
    path = _module_file(name)
    if path is None:
        return None
    if keys is None:
        return _parse(path, stat_key(path))
    if name not in keys:
        keys[name] = stat_key(path)
    return _parse(path, keys[name])


def _uses(stmts: Sequence[ast.stmt]) -> tuple[set[str], set[tuple[str, str]], list[ast.stmt]]:
    """The names ``stmts`` use bare, the ``(name, attribute)`` pairs they use as ``name.attribute``, their imports.

    Drops the docstrings of the functions and classes in ``stmts`` on the way (in place):
    they never count.
    """
    bare: set[str] = set()
    attrs: set[tuple[str, str]] = set()
    roots: set[int] = set()
    names: list[ast.Name] = []
    imports: list[ast.stmt] = []
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                names.append(node)
            elif isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Name):
                    attrs.add((node.value.id, node.attr))
                    roots.add(id(node.value))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                    node.body = node.body[1:] or [ast.Pass()]
    bare.update(n.id for n in names if id(n) not in roots)
    return bare, attrs, imports


@functools.cache
def _unit_uses(path: Path, key: str | None, unit: str):
    """What unit ``unit`` of file ``path`` uses (see :func:`_uses`) and its own import bindings; once per file version."""
    mod = _parse(path, key)
    bare, attrs, imports = _uses(mod.units.get(unit, []))
    local = _bindings(imports, mod.name, path.name == "__init__.py") if imports else {}
    return bare, attrs, local


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

    def _name(self, mod: _Module | None, local: dict, name: str, attr: str | None) -> None:
        """Follow ``name`` (used as ``name.attr`` when ``attr`` is given) as module ``mod`` binds it."""
        if mod is None:
            return
        binding = local.get(name) or mod.imports.get(name)
        if binding is None:
            if name in mod.units:
                self._add(mod.name, name)
            return
        base, imported = binding
        if base != PACKAGE and not base.startswith(PACKAGE + "."):
            top = base.split(".")[0]
            if top and top not in sys.stdlib_module_names:
                self.external.add(top)
            return
        rel = base[len(PACKAGE) + 1 :]
        if imported is None:  # ``import tradingview_scraper.x``: the package, used through attributes
            self._module_use(rel, attr)
            return
        sub = f"{rel}.{imported}" if rel else imported
        if _module_file(sub) is not None and not self._defines(rel, imported):
            self._module_use(sub, attr)
        else:
            self._symbol(rel, imported)

    def _defines(self, module: str, name: str) -> bool:
        mod = _module(module, self.keys)
        return mod is not None and (name in mod.units or name in mod.imports)

    def _module_use(self, module: str, attr: str | None) -> None:
        """A package module used by name: through ``module.attr``, or whole when used bare."""
        if attr is None:
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
            base, imported = mod.imports[name]
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                rel = base[len(PACKAGE) + 1 :]
                if imported is None:
                    self._whole(rel)
                else:
                    sub = f"{rel}.{imported}" if rel else imported
                    if _module_file(sub) is not None and not self._defines(rel, imported):
                        self._whole(sub)
                    else:
                        self._symbol(rel, imported, depth + 1)
            else:
                top = base.split(".")[0]
                if top not in sys.stdlib_module_names:
                    self.external.add(top)
        elif _module_file(f"{module}.{name}" if module else name) is not None:
            self._whole(f"{module}.{name}" if module else name)
        else:  # bound some other way (a loop, ``globals()``): the whole module counts
            self._whole(module)


def _entry(func: Callable) -> tuple[str, str]:
    """(package-relative module, top-level name) of a package function."""
    module = getattr(func, "__module__", "") or ""
    qualname = getattr(func, "__qualname__", "") or ""
    if not (module == PACKAGE or module.startswith(PACKAGE + ".")) or not qualname or "<" in qualname:
        raise ConfigError(f"deps: {func!r} is not a top-level function of package {PACKAGE}")
    return module[len(PACKAGE) + 1 :], qualname.split(".")[0]


def _walk(func: Callable) -> _Reach:
    """The walk from stage function ``func`` (see :class:`_Reach`), done."""
    walk = _Reach()
    walk.walk(*_entry(func))
    return walk


def reached(func: Callable) -> dict[str, set[str]]:
    """The package code stage function ``func`` reaches: module file (relative, posix) -> names of its units.

    A unit is a module-level definition (function, class, assignment) or
    :data:`TOPLEVEL`, the module's import-time statements.

    Raises
    ------
    ConfigError
        ``func`` is not a top-level function of the package.
    """
    walk = _walk(func)
    return {
        _module_file(m).relative_to(PACKAGE_DIR).as_posix(): units
        for m, units in sorted(walk.units.items())
        if _module_file(m) is not None
    }


@functools.cache
def _unit_digest(path: Path, key: str | None, unit: str) -> str:
    mod = _parse(path, key)
    _unit_uses(path, key, unit)  # drops the unit's docstrings
    text = "\n".join(ast.dump(stmt, annotate_fields=False) for stmt in mod.units.get(unit, []))
    return hashlib.sha256(text.encode()).hexdigest()


def code_hash(func: Callable) -> str:
    """Fingerprint of the code stage function ``func`` runs: ``"<name>@<digest>"``.

    The digest covers the normalized AST of every package definition ``func`` reaches
    (see :func:`reached`; comments, docstrings and formatting do not count) and the
    versions of the third-party packages that code imports, with what they require. A
    rule's params carry it, so editing what a rule's stage runs reruns exactly that rule
    (and what depends on its outputs). Files are parsed once per process and again only
    when their stat key changes.

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
