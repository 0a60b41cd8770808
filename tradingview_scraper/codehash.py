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
    """One package module, parsed: per unit its digest and the dotted names it uses (``pkg.mod.name``,
    ``numpy.linalg``), and the dotted name each of the module's imports binds."""

    units: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)


def _bindings(nodes: Iterable[ast.AST], absolute: str, is_package: bool) -> dict[str, str]:
    """Name -> the dotted name it binds, of the import statements among ``nodes``, written in module ``absolute``."""
    package = absolute.split(".") if is_package else absolute.split(".")[:-1]
    out: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                out[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, or ``level - 1`` packages up
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            out.update({a.asname or a.name: f"{base}.{a.name}" for a in node.names if a.name != "*"})
    return out


def _strip_docstring(node: ast.AST) -> None:
    body = getattr(node, "body", None)
    first = body[0] if isinstance(body, list) and body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        node.body = body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])


@functools.cache
def _parse(path: Path, key: str | None) -> _Module:
    """Parse package file ``path`` once per version (``key``: its stat key): each unit's normalized AST
    (docstrings dropped, so comments, docstrings and formatting do not count) and what it uses."""
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    is_package = rel.name == "__init__"
    absolute = ".".join([PACKAGE, *(rel.parts[:-1] if is_package else rel.parts)])
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    _strip_docstring(tree)
    mod, stmts = _Module(), {TOPLEVEL: []}
    for stmt in tree.body:
        test = getattr(stmt, "test", None)
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Try, ast.If)) and not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"):
            mod.imports.update(_bindings(ast.walk(stmt), absolute, is_package))  # guarded imports bind too
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        names = [stmt.name] if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        for name in names or [TOPLEVEL]:
            stmts.setdefault(name, []).append(stmt)
    for name, body in stmts.items():
        nodes = [n for stmt in body for n in ast.walk(stmt)]
        for n in nodes:
            _strip_docstring(n)
        local = {**mod.imports, **_bindings(nodes, absolute, is_package)}  # a function's own imports win
        roots = {id(n.value) for n in nodes if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
        uses: set[str] = set()
        for n in nodes:
            used, attr = (n.value, "." + n.attr) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) else (n, "")
            if not isinstance(used, ast.Name) or (not attr and id(n) in roots):
                continue
            if used.id in local:
                uses.add(local[used.id] + attr)
            elif used.id in stmts:
                uses.add(f"{absolute}.{used.id}")
        text = "\n".join(ast.dump(stmt, annotate_fields=False) for stmt in body)
        mod.units[name] = (hashlib.sha256(text.encode()).hexdigest(), frozenset(uses))
    return mod


@functools.cache
def _module_file(name: str) -> Path | None:
    """The source file of package module ``name`` (dotted, relative to the package), or None."""
    base = PACKAGE_DIR.joinpath(*name.split(".")) if name else PACKAGE_DIR
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if name and base.with_suffix(".py").is_file() else None


def _module(name: str) -> _Module | None:
    path = _module_file(name)
    return None if path is None else _parse(path, stat_key(path))


def _whole(module: str) -> list[tuple[str, str]]:
    """Every unit of package module ``module``: a module used bare, or one binding a name some other way."""
    mod = _module(module)
    return [(module, unit) for unit in mod.units] if mod is not None else []


@dataclass
class Reach:
    """The package code (module -> unit -> digest) and third-party import names some functions reach."""

    units: dict[str, dict[str, str]] = field(default_factory=dict)
    external: set[str] = field(default_factory=set)

    def follow(self, dotted: str) -> list[tuple[str, str]]:
        """The package units dotted name ``dotted`` leads to: as Python resolves it, a name a module
        binds before a submodule of that name; a third-party name is recorded instead."""
        parts = dotted.split(".")
        if parts[0] != PACKAGE:
            if parts[0] not in sys.stdlib_module_names:
                self.external.add(parts[0])
            return []
        module = ""
        for part in parts[1:]:
            sub, mod = f"{module}.{part}".lstrip("."), _module(module)
            # The module's own name for ``part`` (a definition, or an import of something else) wins.
            own = mod is not None and (part in mod.units or mod.imports.get(part, f"{PACKAGE}.{sub}") != f"{PACKAGE}.{sub}")
            if own or _module_file(sub) is None:
                return [(module, part)]
            module = sub
        return _whole(module)


def _entry(func: Callable | str) -> tuple[str, str]:
    """(package-relative module, top-level name) of a package function or its ``"module:function"``."""
    if isinstance(func, str):  # a name below the package: its module is not imported, the walk reads sources
        module, _, qualname = f"{PACKAGE}.{func}".partition(":")
    else:
        module, qualname = getattr(func, "__module__", "") or "", getattr(func, "__qualname__", "") or ""
    if not (module == PACKAGE or module.startswith(PACKAGE + ".")) or not qualname or "<" in qualname:
        raise ConfigError(f"codehash: {func!r} is not a top-level function of package {PACKAGE}")
    return module[len(PACKAGE) + 1 :], qualname.split(".")[0]


def reach(*funcs: Callable | str) -> Reach:
    """What the package functions ``funcs`` reach together: every name they use is followed to its
    module-level definition (function, class, assignment) in the package, through imports and
    re-exports, transitively; each reached module counts its import-time statements.

    Raises ConfigError when one of ``funcs`` is not a top-level function of the package.
    """
    out, seen = Reach(), set()
    todo = [_entry(func) for func in funcs]
    while todo:
        module, name = symbol = todo.pop()
        if symbol in seen or module.split(".")[0] in PLACEMENT:
            continue
        seen.add(symbol)
        mod = _module(module)
        if mod is None:
            continue
        units = out.units.setdefault(module, {})
        todo.append((module, TOPLEVEL))  # a module reached counts its import-time code too
        sub = f"{module}.{name}" if module else name
        if name in mod.units:
            units[name], uses = mod.units[name]
            todo.extend(unit for use in uses for unit in out.follow(use))
        elif name in mod.imports:  # a re-export
            todo.extend(out.follow(mod.imports[name]))
        else:  # a submodule, or a name bound some other way (a loop, ``globals()``): all of it counts
            todo.extend(_whole(sub if _module_file(sub) is not None else module))
    return out


def reached(*funcs: Callable) -> dict[str, set[str]]:
    """The package code functions ``funcs`` reach together (:func:`reach`): module file (relative, posix) -> names of its units.

    A unit is a module-level definition (function, class, assignment) or :data:`TOPLEVEL`.
    """
    found = reach(*funcs).units
    return {_module_file(m).relative_to(PACKAGE_DIR).as_posix(): set(units) for m, units in sorted(found.items())}


@functools.cache
def _dist_info(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(version, names of the distributions it requires, extras aside) of installed distribution ``name``."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    requires = [re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r) for r in dist.requires or [] if not re.search(r"extra\s*==", r)]
    return dist.version, tuple(m[1] for m in requires if m)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: Import name -> the distributions installing it, read from every installed distribution's
#: files: once per process, for a name that is not its distribution's.
_distributions_of = functools.cache(importlib.metadata.packages_distributions)


@functools.cache
def _import_dists(top: str) -> tuple[str, ...]:
    """The distributions providing import name ``top``: its namesake, else those that install it (``cvxpy`` is ``cvxpy-base``)."""
    return (top,) if _dist_info(top) is not None else tuple(_distributions_of().get(top, ()))


def libraries(imports: Iterable[str]) -> dict[str, str]:
    """Distribution -> installed version of third-party import names ``imports`` and of what they require."""
    todo = [d for top in imports for d in _import_dists(top)]
    out: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if _normal(name) not in out:
            info = _dist_info(name)
            out[_normal(name)] = info[0] if info is not None else "absent"
            todo.extend(info[1] if info is not None else ())
    return dict(sorted(out.items()))


def code_hash(func: Callable | str) -> str:
    """Fingerprint of the code stage function ``func`` runs: ``"<name>@<digest>"``.

    The digest covers the normalized AST of every package definition ``func`` reaches
    (:func:`reach`; comments, docstrings and formatting aside) and the versions of the
    third-party packages that code imports, with what they require. Files are parsed once
    per process, and again when their stat key changes.

    Raises
    ------
    ConfigError
        ``func`` is not a top-level function of the package.
    """
    found = reach(func)
    digest = hashlib.sha256()
    for module, units in sorted(found.units.items()):
        digest.update("".join(f"{module}:{unit}\0{units[unit]}\n" for unit in sorted(units)).encode())
    for dist, version in libraries(found.external).items():
        digest.update(f"{dist}=={version}\n".encode())
    return f"{_entry(func)[1]}@{digest.hexdigest()[:20]}"
