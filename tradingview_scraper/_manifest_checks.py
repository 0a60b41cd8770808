"""The checks of one manifest profile's own block: its scope, an atomic profile's config and asset bounds, meta bounds, risk profile definitions."""

from __future__ import annotations

from collections import Counter

from .engines import RISK_PROFILES
from .errors import ConfigError
from .manifest_io import ATOMIC_KEYS, BUILTIN_DEFAULTS, deep_merge
from .plugins import BUILTIN_SELECTIONS

#: Keys only one kind of profile reads (None: the whole block), refused in the other kind's own
#: block: a meta profile's sleeves take their data, universe, selection, task CPUs and data-quality
#: policy from their own profiles; an atomic profile has no sleeves to allocate across or to compare windows with.
_ATOMIC_ONLY: dict[str, tuple[str, ...] | None] = {
    "data": None, "universe": None, "selection": None, "backtest": ("num_cpus",), "health": ("data_quality",),
    "allocation": None,
}
_META_ONLY: dict[str, tuple[str, ...] | None] = {
    "meta_allocation": None, "health": ("on_parity_mismatch",), "trading": None,
}


def _check_scope(own: dict, name: str, manifest_path: str) -> None:
    """Refuse a key in profile ``name``'s own block that its kind of profile never reads.

    ``defaults`` may hold every key: each kind reads its own from there.

    Raises
    ------
    ConfigError
        Naming the profile, the key and where it belongs.
    """
    meta = "sleeves" in own
    for key, subkeys in (_ATOMIC_ONLY if meta else _META_ONLY).items():
        found = [key] if key in own and subkeys is None else [f"{key}.{k}" for k in subkeys or () if k in own.get(key, {})]
        if found:
            kind, other = ("meta", "atomic") if meta else ("atomic", "meta")
            raise ConfigError(
                f"manifest {manifest_path!r}: profile {name!r}: key {found[0]!r} applies to {other} profiles only "
                f"(it does nothing in {kind} profile {name!r}); remove it, or set it on the {other} profiles "
                "it is meant for or in defaults"
            )


def _profile_block(manifest: dict, name: str, manifest_path: str, referrer: str | None = None) -> dict:
    profiles = manifest["profiles"]
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        who = f"{referrer} refers to unknown profile {name!r}" if referrer else f"unknown profile {name!r}"
        raise ConfigError(f"manifest {manifest_path!r}: {who}; known profiles: {known}")
    _check_scope(profiles[name], name, manifest_path)
    defaults = deep_merge(BUILTIN_DEFAULTS, manifest.get("defaults", {}))
    return deep_merge(defaults, profiles[name])


def _atomic_config(block: dict, name: str, where: str, estimators: dict[str, dict] | None = None) -> dict:
    cfg = {k: block[k] for k in ATOMIC_KEYS}
    if estimators:
        cfg["estimators"] = estimators
    sel = cfg["selection"]
    if sel["method"] not in BUILTIN_SELECTIONS:
        from .plugins import selection_definition

        cfg["selection"] = sel = selection_definition(sel, where)
    elif "params" in sel:
        raise ConfigError(
            f"{where}: selection.params applies to registered selections only; {sel['method']!r} takes "
            + ("no settings" if sel["method"] == "all" else "top_n and lookback")
        )
    if sel["method"] == "momentum":
        if "top_n" not in sel:
            raise ConfigError(f"{where}: selection 'momentum' needs 'top_n' (a positive integer)")
        sel.setdefault("lookback", 126)
    symbols = cfg["universe"].get("symbols")
    if sel.get("top_n") and symbols and sel["top_n"] > len(symbols):
        raise ConfigError(
            f"{where}: selection.top_n={sel['top_n']} exceeds the universe's {len(symbols)} symbols"
        )
    bt = cfg["backtest"]
    if bt["train_window"] < 2 or bt["test_window"] < 1:
        raise ConfigError(f"{where}: backtest windows must be train_window >= 2 and test_window >= 1")
    if block.get("allocation"):  # only when set: a profile without bounds keeps its config's bytes
        held = sel.get("top_n") or (len(symbols) if symbols else None)
        cfg["allocation"] = _asset_bounds(block["allocation"], symbols, held, where)
    return cfg


def _asset_bounds(alloc: dict, symbols: list[str] | None, n: int | None, where: str) -> dict:
    """An atomic profile's ``allocation``: bounds on every asset weight (a number, or symbol -> bound with ``"*"``).

    Checked against the ``n`` assets a window holds (the universe, or a momentum selection's
    ``top_n``) when known: every selection of ``n`` of the symbols must admit a full allocation
    (the ``n`` smallest caps sum to at least 1, the ``n`` largest floors to at most 1).

    Raises
    ------
    ConfigError
        One line naming the key: a floor above its cap, a symbol outside the universe, bounds no
        window's assets can meet.
    """
    lo, hi = alloc.get("min_weight", 0.0), alloc.get("max_weight", 1.0)
    if isinstance(lo, dict) or isinstance(hi, dict):
        for key, value in (("min_weight", lo), ("max_weight", hi)):
            stray = [s for s in value if s != "*" and symbols and s not in symbols] if isinstance(value, dict) else []
            if stray:
                raise ConfigError(f"{where}: allocation.{key}: symbol {stray[0]!r} is not in the universe ({', '.join(symbols)})")
        out = {k: ({s: float(b) for s, b in v.items()} if isinstance(v, dict) else float(v)) for k, v in (("min_weight", lo), ("max_weight", hi))}
        if not symbols:
            return out

        def of(value, sym, default):
            return float(value.get(sym, value.get("*", default))) if isinstance(value, dict) else float(value)

        los = {s: of(out["min_weight"], s, 0.0) for s in symbols}
        his = {s: of(out["max_weight"], s, 1.0) for s in symbols}
        bad = [s for s in symbols if los[s] > his[s]]
        if bad:
            raise ConfigError(f"{where}: allocation: symbol {bad[0]!r} has min_weight {los[bad[0]]} > max_weight {his[bad[0]]}")
        k = n or len(symbols)
        caps, floors = sorted(his.values())[:k], sorted(los.values(), reverse=True)[:k]
        if sum(caps) < 1 - 1e-12:
            raise ConfigError(
                f"{where}: infeasible allocation.max_weight: the {k} smallest caps a window can hold sum to {sum(caps):g} < 1"
            )
        if sum(floors) > 1 + 1e-12:
            raise ConfigError(
                f"{where}: infeasible allocation.min_weight: the {k} largest floors a window can hold sum to {sum(floors):g} > 1"
            )
        return out
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ConfigError(f"{where}: allocation.min_weight={lo} exceeds allocation.max_weight={hi}")
    if n and n * hi < 1 - 1e-12:
        raise ConfigError(
            f"{where}: infeasible allocation.max_weight: {n} assets x {hi} = {n * hi:g} < 1; use max_weight >= {1 / n:.4g}"
        )
    if n and n * lo > 1 + 1e-12:
        raise ConfigError(
            f"{where}: infeasible allocation.min_weight: {n} assets x {lo} = {n * lo:g} > 1; use min_weight <= {1 / n:.4g}"
        )
    return {"min_weight": lo, "max_weight": hi}


def _check_bounds(n: int, alloc: dict, where: str) -> None:
    lo, hi = alloc["min_weight"], alloc["max_weight"]
    if lo > hi:
        raise ConfigError(f"{where}: meta_allocation.min_weight={lo} exceeds max_weight={hi}")
    if n * lo > 1 + 1e-12:
        raise ConfigError(
            f"{where}: infeasible meta_allocation: {n} sleeves x min_weight {lo} = {n * lo:g} > 1; "
            f"use min_weight <= {1 / n:.4g}"
        )
    if n * hi < 1 - 1e-12:
        raise ConfigError(
            f"{where}: infeasible meta_allocation: {n} sleeves x max_weight {hi} = {n * hi:g} < 1; "
            f"use max_weight >= {1 / n:.4g}"
        )


def _check_risk_profiles(names: list[str], where: str) -> list[str]:
    for name in names:
        if name not in RISK_PROFILES:
            raise ConfigError(f"{where}: unknown risk profile {name!r}; valid: {', '.join(RISK_PROFILES)}")
    return list(names)


def _profile_definitions(items: list, where: str) -> tuple[list[str], dict[str, dict]]:
    """A ``profiles`` list's names, and the definitions of those given as estimator objects.

    A string names a built-in risk profile; an object ``{"name", "estimator", "params"}``
    defines one (:func:`plugins.estimator_definition`, which imports skfolio and the
    registered plugins only when such an object is present).

    Raises
    ------
    ConfigError
        An unknown built-in name, a definition that does not build, a name given twice or
        a definition named like a built-in profile.
    """
    names, definitions = [], {}
    for i, item in enumerate(items):
        if isinstance(item, str):
            names += _check_risk_profiles([item], where)
            continue
        from .plugins import estimator_definition

        spec = estimator_definition(item, f"{where}: profiles[{i}]")
        if spec["name"] in RISK_PROFILES:
            raise ConfigError(
                f"{where}: profiles[{i}]: name {spec['name']!r} is a built-in risk profile; give the estimator its own name"
            )
        names.append(spec["name"])
        definitions[spec["name"]] = spec
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise ConfigError(f"{where}: risk profile {dupes[0]!r} is listed twice in profiles")
    return names, definitions


def _agreeing(definitions: dict[str, dict], theirs: dict[str, dict], names: list[str], where: str) -> None:
    """Refuse a nested meta profile defining a risk profile the run uses otherwise than the root does.

    Philosophy matching: a meta profile's ``cvar`` allocates across its sleeves' ``cvar``
    streams with the same estimator, so one name has one definition in a run.
    """
    for name in names:
        if definitions.get(name) != theirs.get(name):
            raise ConfigError(
                f"{where}: risk profile {name!r} is defined otherwise than in the profile the run starts from "
                f"({theirs.get(name) or 'built-in'} here, {definitions.get(name) or 'built-in'} there); one name "
                "has one definition in a run"
            )
