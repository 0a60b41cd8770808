"""Risk profiles as skfolio estimators and selections from installed packages' entry points.

A manifest names code, it never imports it: a risk profile's ``estimator`` is a class of
``skfolio.optimization`` (nested estimators: of skfolio's prior, moments, distance, cluster
and uncertainty-set modules) or a name registered by an installed package under the
entry-point group ``tradingview_scraper.estimators``; a selection ``method`` other than
``all`` and ``momentum`` is a name registered under ``tradingview_scraper.selections``.
Definitions are checked where the manifest is resolved (one line naming the key); the
estimators are built from the same JSON definitions where they are fitted.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from enum import Enum
from typing import Any

from .errors import ConfigError

#: Entry-point group of estimator classes (risk profiles, nested estimators).
ESTIMATORS_GROUP = "tradingview_scraper.estimators"
#: Entry-point group of selection functions ``(train_returns, params) -> symbols``.
SELECTIONS_GROUP = "tradingview_scraper.selections"
#: Selection methods the package implements itself.
BUILTIN_SELECTIONS = ("all", "momentum")

#: Where a risk profile's own estimator may come from, and where its nested estimators may.
OPTIMIZATION_MODULE = "skfolio.optimization"
NESTED_MODULES = (
    "skfolio.optimization",
    "skfolio.prior",
    "skfolio.moments",
    "skfolio.distance",
    "skfolio.cluster",
    "skfolio.uncertainty_set",
)
#: Modules whose public enums a string parameter may name a member of.
_ENUM_MODULES = (*NESTED_MODULES, "skfolio.measures")
#: A custom risk profile's name: a file-name part and a plain word of a Snakemake wildcard pattern.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


# --------------------------------------------------------------------------- entry points


def _entry_points(group: str) -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}


def _package_of(ep) -> str | None:
    """``name==version`` of the distribution that registered ``ep`` (None when unknown)."""
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']}=={dist.version}" if dist is not None else None


def registered(group: str) -> list[str]:
    """The names registered under entry-point group ``group``, sorted."""
    return sorted(_entry_points(group))


#: Entry points loaded in this process, by (group, name): every walk-forward window builds its
#: estimator anew, and scanning the installed distributions each time would cost more than
#: a small fit. Only successful loads are kept, so a package installed later is still found.
_LOADED: dict[tuple[str, str], tuple[Any, str | None]] = {}


def _load(group: str, name: str, where: str):
    if (group, name) in _LOADED:
        return _LOADED[group, name]
    ep = _entry_points(group).get(name)
    if ep is None:
        return None, None
    try:
        _LOADED[group, name] = ep.load(), _package_of(ep)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's one line, not a traceback
        raise ConfigError(
            f"{where}: entry point {name!r} of group {group} ({ep.value}) does not load: {type(exc).__name__}: {exc}"
        ) from None
    return _LOADED[group, name]


def selection_function(method: str, where: str = "selection.method"):
    """The function registered as selection ``method``.

    Raises
    ------
    ConfigError
        No installed package registers ``method``, or its entry point does not load or is not callable.
    """
    fn, _ = _load(SELECTIONS_GROUP, method, where)
    if fn is None:
        others = ", ".join([*BUILTIN_SELECTIONS, *registered(SELECTIONS_GROUP)])
        raise ConfigError(
            f"{where}: unknown selection method {method!r}; valid: {others} (a package registers more under the "
            f"entry-point group {SELECTIONS_GROUP})"
        )
    if not callable(fn):
        raise ConfigError(f"{where}: selection {method!r} is registered as {fn!r}, which is not a function")
    return fn


def selection_definition(selection: dict, where: str) -> dict:
    """A registered selection's block, checked, with the registering package's ``name==version``.

    The package's version is part of the sleeve's params: upgrading the plugin reruns the sleeves using it.

    Raises
    ------
    ConfigError
        Unknown method, or ``params`` is not an object.
    """
    method = selection["method"]
    selection_function(method, f"{where}: selection.method")
    params = selection.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: selection.params must be an object, not {params!r}")
    return {**selection, "params": params, "package": _load(SELECTIONS_GROUP, method, where)[1]}


# --------------------------------------------------------------------------- estimators


def _public(module: str, name: str) -> Any:
    """Public name ``name`` of ``module`` (listed in its ``__all__``), or None."""
    import importlib

    mod = importlib.import_module(module)
    return getattr(mod, name) if name in getattr(mod, "__all__", ()) else None


@functools.cache
def _enums() -> dict[str, type[Enum]]:
    """The public enums of skfolio's modules by class name (abstract bases skipped: some warn when touched)."""
    import importlib

    out: dict[str, type[Enum]] = {}
    for module in _ENUM_MODULES:
        for name in getattr(importlib.import_module(module), "__all__", ()):
            obj = None if name.startswith("Base") else _public(module, name)
            if isinstance(obj, type) and issubclass(obj, Enum):
                out.setdefault(name, obj)
    return out


def _resolve_class(name: str, where: str, *, top: bool) -> tuple[type, str | None]:
    """The class ``name`` stands for, and the registering package for an entry point."""
    from sklearn.base import BaseEstimator

    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: estimator must be a class name such as 'skfolio.optimization.MeanRisk', not {name!r}")
    modules = (OPTIMIZATION_MODULE,) if top else NESTED_MODULES
    package = None
    if name.startswith("skfolio."):
        module, _, attr = name.rpartition(".")
        if module not in modules:
            allowed = " or ".join(modules)
            raise ConfigError(
                f"{where}: estimator {name!r} is refused: a {'risk profile' if top else 'nested'} estimator is a class "
                f"of {allowed} or a name registered under the entry-point group {ESTIMATORS_GROUP}"
            )
        cls = _public(module, attr)
        if cls is None:
            raise ConfigError(f"{where}: {module} has no public class {attr!r}")
    else:
        cls, package = _load(ESTIMATORS_GROUP, name, where)
        if cls is None:
            plugins = registered(ESTIMATORS_GROUP)
            raise ConfigError(
                f"{where}: estimator {name!r} is neither a class of {' / '.join(modules)} nor registered under the "
                f"entry-point group {ESTIMATORS_GROUP} (registered: {', '.join(plugins) or 'none'}); the manifest "
                "never imports other code"
            )
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)) or inspect.isabstract(cls):
        raise ConfigError(f"{where}: {name!r} is not an estimator class (a concrete scikit-learn BaseEstimator)")
    if top and not hasattr(cls, "fit"):
        raise ConfigError(f"{where}: {name!r} has no fit method")
    return cls, package


def _param_names(cls) -> list[str]:
    return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")


def _enum_candidates(cls, param: str, enums: dict[str, type[Enum]]) -> tuple[list[type[Enum]], bool]:
    """The enums parameter ``param`` of ``cls`` takes (from its annotation and default), and whether it takes a str."""
    par = inspect.signature(cls.__init__).parameters[param]
    words = set(re.findall(r"[A-Za-z_]\w*", str(par.annotation)))
    found = [e for n, e in enums.items() if n in words]
    if "Measure" in words:  # skfolio's typing alias for any measure enum
        found += [e for n, e in enums.items() if n.endswith("Measure") and e not in found]
    if isinstance(par.default, Enum) and type(par.default) not in found:
        found.insert(0, type(par.default))
    return found, "str" in words


def _value(value, cls, param: str, where: str, enums):
    """A definition's JSON value as the estimator's parameter: nested estimators built, enum names resolved."""
    if isinstance(value, dict) and "estimator" in value:
        return _build(value, where, top=False, enums=enums)
    if isinstance(value, list):
        return [_value(v, cls, param, f"{where}[{i}]", enums) for i, v in enumerate(value)]
    if isinstance(value, str) and cls is not None:
        candidates, takes_str = _enum_candidates(cls, param, enums)
        for enum in candidates:
            if value in enum.__members__:
                return enum[value]
        if candidates and not takes_str:
            names = ", ".join(m for e in candidates for m in e.__members__)
            kinds = " / ".join(e.__name__ for e in candidates)
            raise ConfigError(f"{where}: {value!r} is not a member of {kinds}; valid: {names}")
    return copy.deepcopy(value)


def _build(definition: dict, where: str, *, top: bool, enums) -> Any:
    extra = sorted(set(definition) - {"estimator", "params", *(("name", "description", "packages") if top else ())})
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; an estimator object has 'estimator' and 'params'")
    cls, _ = _resolve_class(definition.get("estimator"), f"{where}.estimator", top=top)
    params = definition.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params must be an object of the estimator's parameters, not {params!r}")
    valid = _param_names(cls)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"{where}.params: {definition['estimator']} has no parameter {key!r}; valid: {', '.join(valid)}"
            )
    kwargs = {k: _value(v, cls, k, f"{where}.params.{k}", enums) for k, v in params.items()}
    try:
        est = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a constructor's refusal is the definition's one line
        raise ConfigError(f"{where}: {definition['estimator']}({', '.join(params)}) refused: {type(exc).__name__}: {exc}") from None
    got = est.get_params(deep=False)
    changed = [k for k, v in kwargs.items() if got.get(k, _MISSING) is not v]
    if changed:
        raise ConfigError(
            f"{where}: {definition['estimator']} does not keep parameter {changed[0]!r} as given (not a "
            "scikit-learn-compatible estimator: get_params must return the constructor's arguments)"
        )
    return est


_MISSING = object()


def estimator_definition(item: dict, where: str) -> dict:
    """A risk profile defined as an estimator object, checked by building it once; returned normalized.

    Parameters
    ----------
    item : dict
        ``{"name": ..., "estimator": ..., "params": {...}}`` from a ``profiles`` list.
    where : str
        How messages name the item (manifest, profile, list position).

    Returns
    -------
    dict
        ``name``, ``estimator``, ``params`` and, when the definition uses entry points
        (at the top or nested), ``packages``: the registering distributions'
        ``name==version``, so that upgrading one reruns what uses it.

    Raises
    ------
    ConfigError
        A bad name, a class that is neither allowed nor registered, a non-estimator, an
        unknown parameter, an enum name that is not a member: one line naming the key.
    """
    name = item.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{where}.name: {name!r} is not a valid risk profile name (lower-case letters, digits and '_', "
            "starting with a letter)"
        )
    where = f"{where} ({name!r})"
    _build(item, where, top=True, enums=_enums())
    out = {"name": name, "estimator": item["estimator"], "params": copy.deepcopy(item.get("params", {}))}
    packages = sorted({p for p in _plugin_packages(item, where) if p})
    if packages:
        out["packages"] = packages
    return out


def _plugin_packages(value, where: str):
    """``name==version`` of the package behind every entry-point estimator in a definition, nested ones included."""
    if isinstance(value, dict):
        name = value.get("estimator")
        if isinstance(name, str) and not name.startswith("skfolio."):
            yield _load(ESTIMATORS_GROUP, name, where)[1]
        for v in value.get("params", {}).values():
            yield from _plugin_packages(v, where)
    elif isinstance(value, list):
        for v in value:
            yield from _plugin_packages(v, where)


def build_estimator(definition: dict, *, min_weight: float | None = None, max_weight: float | None = None):
    """A fresh, unfitted estimator from a definition :func:`estimator_definition` returned.

    Parameters
    ----------
    definition : dict
        The risk profile's definition.
    min_weight, max_weight : float, optional
        Bounds the pipeline imposes (a meta node's sleeve bounds): given to the estimator as
        its ``min_weights`` / ``max_weights`` when it has those parameters and the
        definition does not set them.

    Returns
    -------
    sklearn.base.BaseEstimator
    """
    est = _build(definition, f"risk profile {definition['name']!r}", top=True, enums=_enums())
    if min_weight is not None and max_weight is not None:
        names = est.get_params(deep=False)
        given = definition.get("params", {})
        bounds = {k: v for k, v in (("min_weights", min_weight), ("max_weights", max_weight)) if k in names and k not in given}
        if bounds:
            est.set_params(**bounds)
    return est
