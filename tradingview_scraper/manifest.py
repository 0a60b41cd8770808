"""Resolution of a manifest profile into a run plan; reading and validating the file is :mod:`manifest_io`'s (its names re-exported here), checking a profile's own block :mod:`_manifest_checks`'s."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path

from ._manifest_checks import (
    _agreeing,
    _atomic_config,
    _check_bounds,
    _profile_block,
    _profile_definitions,
)
from .engines import RISK_PROFILES
from .errors import ConfigError
from .layout import ROOT, check_name, child_path, wildcard_like
from .manifest_io import (  # noqa: F401 (loading is part of this module's public names)
    ATOMIC_KEYS,
    BUILTIN_DEFAULTS,
    DEFAULT_MANIFEST,
    PACKAGED_MANIFEST,
    deep_merge,
    load_manifest,
    manifest_file,
    strict_json,
    validate_manifest,
)

# --------------------------------------------------------------------------- the plan


@dataclass
class NodeSpec:
    """One node of a run tree: an atomic sleeve or a meta profile.

    ``path`` is relative to the run directory (``"."`` for the root,
    ``"sleeves/a/sleeves/b"`` for nested nodes).
    """

    path: str
    kind: str  # "atomic" | "meta" | "external"
    profile: str
    sleeve_id: str | None
    config: dict
    children: list[str] = field(default_factory=list)
    pin: str | None = None

    @property
    def is_meta(self) -> bool:
        return self.kind == "meta"

    @property
    def label(self) -> str:
        """How messages name the node: ``sleeve 'tech'``, ``meta profile 'meta_demo'`` (the root),
        ``meta sleeve 'branch' (meta profile 'meta_mid', node sleeves/branch)``."""
        if not self.is_meta:
            return f"sleeve {self.sleeve_id or self.profile!r}"
        if self.path == ROOT:
            return f"meta profile {self.profile!r}"
        return f"meta sleeve {self.sleeve_id!r} (meta profile {self.profile!r}, node {self.path})"


@dataclass
class Plan:
    """The resolved tree of one run: every node keyed by its path relative to the run dir."""

    profile: str
    risk_profiles: list[str]
    nodes: dict[str, NodeSpec]
    manifest_path: str
    manifest_sha256: str
    #: The root meta profile's checked ``trading`` block (``rebalance.check_trading``), or None.
    trading: dict | None = None

    @property
    def root(self) -> NodeSpec:
        return self.nodes[ROOT]

    def atomic_nodes(self) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.kind == "atomic"]

    def meta_nodes(self) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.kind == "meta"]

    def external_nodes(self) -> list[NodeSpec]:
        """Sleeves read from the user's files (``{"id", "external": {...}}``), see :mod:`external`."""
        return [n for n in self.nodes.values() if n.kind == "external"]

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "risk_profiles": self.risk_profiles,
            "manifest_path": self.manifest_path,
            "manifest_sha256": self.manifest_sha256,
            "nodes": {k: asdict(v) for k, v in self.nodes.items()},
            # Only with a trading block: a resolved manifest without one keeps its bytes.
            **({"trading": self.trading} if self.trading is not None else {}),
        }


def is_meta_profile(manifest: dict, name: str) -> bool:
    """Whether profile ``name`` of ``manifest`` is a meta profile (has ``sleeves``)."""
    return "sleeves" in manifest["profiles"].get(name, {})


def resolve(
    manifest: dict,
    profile: str,
    *,
    risk_profiles: list[str] | None = None,
    manifest_path: str = str(DEFAULT_MANIFEST),
    manifest_sha256: str = "",
) -> Plan:
    """Resolve ``profile`` of ``manifest`` into a :class:`Plan` (the whole sleeve tree).

    Every configuration error is raised here, before any work starts: unknown
    profiles, empty or single-sleeve meta profiles, duplicate sleeve ids, cycles,
    infeasible bounds, unknown or unconfigured risk profiles, window mismatches.

    Raises
    ------
    ConfigError
    """
    if not isinstance(profile, str) or not profile:
        raise ConfigError("profile is empty: pass --profile <name> (e.g. meta_demo)")
    check_name(profile, "profile")
    block = _profile_block(manifest, profile, manifest_path)
    where = f"manifest {manifest_path!r}: profile {profile!r}"
    configured, definitions = _profile_definitions(block["profiles"], where)
    if risk_profiles is None:
        chosen = configured
    else:
        if not risk_profiles:
            raise ConfigError(f"--profiles is empty; choose from {', '.join(configured)}")
        unknown = [p for p in risk_profiles if p not in RISK_PROFILES and p not in configured]
        if unknown:
            raise ConfigError(f"--profiles: unknown risk profile {unknown[0]!r}; valid: {', '.join(configured)}")
        missing = [p for p in risk_profiles if p not in configured]
        if missing:
            raise ConfigError(
                f"--profiles: {', '.join(missing)} not configured for profile {profile!r}; "
                f"configured: {', '.join(configured)}"
            )
        chosen = list(dict.fromkeys(risk_profiles))
    # Only the chosen profiles' definitions: every node's config carries them (its rule's
    # params), and the shipped profiles, with none, keep their configs as they were.
    estimators = {name: definitions[name] for name in chosen if name in definitions}

    nodes: dict[str, NodeSpec] = {}
    if is_meta_profile(manifest, profile):
        _resolve_meta(manifest, profile, ROOT, None, [], nodes, chosen, manifest_path, {}, estimators)
    else:
        nodes[ROOT] = NodeSpec(ROOT, "atomic", profile, None, _atomic_config(block, profile, where, estimators))
    # Trading settings are the root's: a nested meta profile's are not read (its book is its parent's).
    from .rebalance import check_trading

    trading = check_trading(manifest["profiles"][profile].get("trading"), where)
    return Plan(profile, chosen, nodes, manifest_path, manifest_sha256, trading)


def _resolve_meta(
    manifest: dict,
    name: str,
    path: str,
    sleeve_id: str | None,
    stack: list[str],
    nodes: dict[str, NodeSpec],
    risk_profiles: list[str],
    manifest_path: str,
    atomic: dict[str, dict],
    estimators: dict[str, dict] | None = None,
) -> None:
    """Add meta profile ``name`` at ``path`` and its subtree to ``nodes``.

    ``atomic`` memoizes resolved atomic configs: sleeves sharing a profile share one
    (read-only) config, so a manifest with thousands of sleeves resolves quickly.
    """
    where = f"manifest {manifest_path!r}: profile {name!r}"
    if name in stack:
        loop = " -> ".join([*stack[stack.index(name):], name])
        raise ConfigError(f"manifest {manifest_path!r}: meta profiles form a cycle: {loop}")
    block = _profile_block(manifest, name, manifest_path)
    sleeves = block.get("sleeves") or []
    if len(sleeves) < 2:
        raise ConfigError(f"{where}: a meta profile needs at least 2 sleeves, found {len(sleeves)}")
    ids = [s["id"] for s in sleeves]
    dupes = sorted(i for i, k in Counter(ids).items() if k > 1)
    if dupes:
        raise ConfigError(f"{where}: duplicate sleeve ids {', '.join(dupes)}; sleeve ids must be unique")
    alloc = block["meta_allocation"]
    _check_bounds(len(sleeves), alloc, where)
    estimators = estimators or {}
    if stack:  # a nested meta profile must offer the risk profiles the root runs
        offered, own = (
            _profile_definitions(block["profiles"], where)
            if any(not isinstance(p, str) for p in block["profiles"])
            else (block["profiles"], {})
        )
        missing = [p for p in risk_profiles if p not in offered]
        if missing:
            raise ConfigError(
                f"{where}: nested meta profile does not configure risk profile(s) {', '.join(missing)} "
                f"that its parent runs"
            )
        _agreeing(estimators, own, risk_profiles, where)
    bt = block["backtest"]
    config = {
        "meta_allocation": alloc,
        "backtest": {"train_window": bt["train_window"], "test_window": bt["test_window"]},
        "health": block["health"],
        "sleeve_ids": ids,
        # What a rebalance of this profile's book costs per unit of traded weight.
        "frictions": {"commission": bt["commission"], "slippage": bt["slippage"]},
    }
    if estimators:
        config["estimators"] = estimators
    node = NodeSpec(path, "meta", name, sleeve_id, config)
    nodes[path] = node
    windows = (bt["train_window"], bt["test_window"])
    mismatched: list[str] = []
    for sleeve in sleeves:
        sid = sleeve["id"]
        child = child_path(path, sid)
        node.children.append(child)
        swhere = f"{where}: sleeve {sid!r}"
        if "external" in sleeve:
            nodes[child] = _external_node(sleeve, child, name, risk_profiles, bt, swhere)
            continue
        if "meta_profile" in sleeve:
            target = sleeve["meta_profile"]
            _profile_block(manifest, target, manifest_path, referrer=f"profile {name!r} sleeve {sid!r}")
            if not is_meta_profile(manifest, target):
                raise ConfigError(f"{swhere}: meta_profile {target!r} is an atomic profile; use 'profile'")
            if "run_id" in sleeve:
                raise ConfigError(f"{swhere}: a nested meta sleeve cannot be pinned with run_id")
            _resolve_meta(
                manifest, target, child, sid, [*stack, name], nodes, risk_profiles, manifest_path, atomic, estimators
            )
            child_bt = nodes[child].config["backtest"]
        else:
            target = sleeve["profile"]
            if target == name:
                raise ConfigError(f"manifest {manifest_path!r}: meta profiles form a cycle: {name} -> {name}")
            if target not in atomic:
                sblock = _profile_block(manifest, target, manifest_path, referrer=f"profile {name!r} sleeve {sid!r}")
                if is_meta_profile(manifest, target):
                    raise ConfigError(f"{swhere}: profile {target!r} is a meta profile; use 'meta_profile'")
                atomic[target] = _atomic_config(
                    sblock, target, f"manifest {manifest_path!r}: profile {target!r}", estimators
                )
            pin = check_name(sleeve["run_id"], f"{swhere}: run_id") if "run_id" in sleeve else None
            cfg = atomic[target]
            nodes[child] = NodeSpec(child, "atomic", target, sid, cfg, pin=pin)
            child_bt = cfg["backtest"]
        if (child_bt["train_window"], child_bt["test_window"]) != windows:
            mismatched.append(f"sleeve {sid!r}: walk-forward windows train/test {child_bt['train_window']}/"
                              f"{child_bt['test_window']}")  # fmt: skip
    if mismatched:
        _parity_mismatch(node, where, windows, mismatched, block["health"]["on_parity_mismatch"])
    if alloc.get("book"):
        _resolve_book(node, nodes, where, Path(manifest_path).parent)


def _resolve_book(node: NodeSpec, nodes: dict[str, NodeSpec], where: str, base_dir: Path) -> None:
    """Check meta node ``node``'s book limits (``meta_allocation.book``) before any work and record what they need.

    A groups CSV is read here (its map replaces the path in the node's config, so an edit
    reruns the node); the children record their per-window weights (``record_windows``),
    which the limits are enforced against in every window.
    """
    from .limits import book_limits

    children = [nodes[c] for c in node.children]
    nested = [c.sleeve_id for c in children if c.is_meta]
    if nested:
        raise ConfigError(
            f"{where}: meta_allocation.book on a meta profile with nested meta sleeve {nested[0]!r} is not supported; "
            "set the limits on the nested profile's own book, or on a profile of atomic sleeves"
        )
    pinned = [c.sleeve_id for c in children if c.pin]
    if pinned:
        raise ConfigError(
            f"{where}: meta_allocation.book with pinned sleeve {pinned[0]!r}: a pinned run records no per-window "
            "weights to hold the limits against; drop its run_id"
        )
    book = dict(node.config["meta_allocation"]["book"])
    universes = [c.config["universe"].get("symbols") for c in children]
    symbols = None if any(u is None for u in universes) else [s for u in universes for s in u]
    directions = {c.config["universe"].get("direction", "LONG") for c in children}
    limits = book_limits(book, where, symbols=symbols, both_sides=len(directions) > 1, base_dir=base_dir)
    if isinstance(book.get("groups"), str):
        book["groups_file"], book["groups"] = book["groups"], dict(limits.groups)
    node.config["meta_allocation"] = {**node.config["meta_allocation"], "book": book}
    for c in children:
        c.config = {**c.config, "record_windows": True}


# ----------------------------------------------------------------- external sleeves (issue 22)


def _external_node(sleeve: dict, path: str, parent: str, risk_profiles: list[str], bt: dict, where: str) -> NodeSpec:
    """An external sleeve's node: its files as the manifest gives them, on its parent's windows.

    The stream has no walk-forward of its own: it takes the parent's windows, so parity holds
    by construction. ``holdings`` given as a map must name every risk profile the run uses.

    Raises
    ------
    ConfigError
        ``holdings`` is a map that lacks a risk profile the run uses, or a path has a part
        Snakemake would read as a wildcard.
    """
    ext = dict(sleeve["external"])
    holdings = ext["holdings"]
    paths = [("returns", ext["returns"])] + (
        [(f"holdings.{p}", h) for p, h in holdings.items()] if isinstance(holdings, dict) else [("holdings", holdings)]
    ) + ([("prices", ext["prices"])] if "prices" in ext else [])  # fmt: skip
    for key, raw in paths:
        if wildcard_like(raw):  # the files are the rule's inputs, which Snakemake would read as a pattern
            raise ConfigError(f"{where}: external.{key} {raw!r} has a part Snakemake reads as a wildcard ('{{name}}'); rename the file")
    if isinstance(holdings, dict):
        missing = [p for p in risk_profiles if p not in holdings]
        if missing:
            raise ConfigError(
                f"{where}: external.holdings names no file for risk profile(s) {', '.join(missing)}; give one file "
                "for every risk profile, or one file (a string) for all"
            )
        ext["holdings"] = {p: holdings[p] for p in risk_profiles}
    config = {"external": ext, "backtest": {"train_window": bt["train_window"], "test_window": bt["test_window"]}}
    return NodeSpec(path, "external", parent, sleeve["id"], config)


def _parity_mismatch(node: NodeSpec, where: str, windows: tuple[int, int], mismatched: list[str], policy: str) -> None:
    """Refuse a meta profile whose sleeves' walk-forward windows differ from its own, or record the warning.

    Their streams would not be comparable window for window (DOMAIN: walk-forward parity).
    ``policy`` is the meta profile's ``health.on_parity_mismatch``: ``"error"`` refuses the
    run; ``"warn"`` records the line in ``node.config["parity_warnings"]`` (the resolved
    manifest keeps it), which the node's ``meta_returns`` job prints on the console and its
    report shows at the top.

    Raises
    ------
    ConfigError
        ``policy`` is ``"error"``: one line naming every mismatched sleeve and its windows.
    """
    msg = f"{where}: {'; '.join(mismatched)} differ from the meta profile's {windows[0]}/{windows[1]}"
    if policy == "error":
        raise ConfigError(
            f"{msg}; sleeves must share windows (backtest.train_window / test_window), or set the meta "
            "profile's health.on_parity_mismatch to \"warn\""
        )
    node.config.setdefault("parity_warnings", []).append(
        f"{msg}; continuing (health.on_parity_mismatch = warn): their streams are not comparable window for window"
    )


def load_plan(
    profile: str,
    manifest_path: str | Path = DEFAULT_MANIFEST,
    risk_profiles: list[str] | None = None,
) -> Plan:
    """Load, validate and resolve in one step (what every entry point calls first).

    Raises
    ------
    ConfigError
        An argument of the wrong type, or anything :func:`load_manifest` and :func:`resolve` refuse.
    """
    from ._args import check_args

    check_args(
        "load_plan",
        profile=(profile, (str,), False),
        manifest_path=(manifest_path, (str, PathLike), False),
        risk_profiles=(risk_profiles, (list, tuple), True),
    )
    manifest, sha = load_manifest(manifest_path)
    return resolve(manifest, profile, risk_profiles=risk_profiles, manifest_path=str(manifest_path), manifest_sha256=sha)


def parse_risk_profiles(value: str | list[str] | None) -> list[str] | None:
    """``"hrp,min_variance"`` or a list -> list; None/"" -> None (the profile's own list)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        if not value.strip() or any(not v for v in items):
            raise ConfigError(f"--profiles {value!r} is not a comma-separated list of risk profiles")
        return items
    return list(value)
