"""Pinned sleeves: a pin resolved to an earlier run's sleeve and verified before it is used, and
the pinned_sleeve step that copies it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .. import runlock
from ..errors import DataError
from ..layout import Node, child_path, read_bytes, read_json, read_parquet, run_node
from ..manifest import ROOT, NodeSpec
from ..run import RunContext

#: Artifacts a pinned sleeve directory must hold, besides ``weights_<p>.json`` per risk profile.
PIN_REQUIRED = ("returns", "health", "sign_test")


def resolve_pin(
    spec: NodeSpec, runs_root: Path, risk_profiles: list[str], run_id: str | None = None, *, whole: bool = False
) -> tuple[Node, dict]:
    """The sleeve directory pinned sleeve ``spec`` reuses, checked, and what it was made from.

    A pin ``run_id`` resolves to ``<runs_root>/<run_id>/sleeves/<sleeve_id>/`` (a sleeve of an
    earlier meta run) or ``<runs_root>/<run_id>/`` (a standalone run of the same atomic
    profile, from ``run_production_pipeline.py --profile <atomic>``). Never a fallback to
    another run.

    Parameters
    ----------
    spec : NodeSpec
        An atomic node with ``pin`` set.
    runs_root : Path
        Directory of run directories.
    risk_profiles : list of str
        Risk profiles the new run consumes; the pinned sleeve must hold each.
    run_id : str, optional
        The new run's id (a run cannot pin itself).
    whole : bool
        Verify every artifact the pinned run's ledger records, not only the pinned files
        (the pre-flight check; see :func:`runlock.check_source_run`).

    Returns
    -------
    source : Node
        The pinned sleeve directory.
    info : dict
        ``profile``, ``direction``, ``config`` (the source's resolved config, or None when
        the pinned run has no ``manifest.resolved.json``) and ``manifest_sha256``.

    Raises
    ------
    DataError
        The pin does not resolve (the message names the sleeve and the paths looked at), the
        pinned directory lacks a required artifact or a risk profile, or it belongs to
        another profile, direction or walk-forward windows; or the pinned run cannot be
        trusted (see :func:`runlock.check_source_run`: a symlink, being written, unfinished, or a
        file that differs from its audit record).
    """
    sid, pin = spec.sleeve_id, spec.pin
    who = f"sleeve {sid!r}: pinned run_id {pin!r}"
    if pin == run_id:
        raise DataError(f"{who} is this run's own id; pin an earlier run")
    pinned = run_node(pin, runs_root)
    if pinned.dir.is_symlink():
        raise DataError(f"{who}: run directory {pinned.dir} is a symlink (to {os.readlink(pinned.dir)}); pins are never followed through links")
    resolved = read_json(pinned.file("resolved")) if pinned.file("resolved").is_file() else None
    nodes = (resolved or {}).get("nodes") or {}

    def holds(node: Node, path: str) -> bool:  # a run made before resolved manifests: its files tell
        if resolved is None:
            return any(node.file(k).exists() for k in PIN_REQUIRED)
        return nodes.get(path, {}).get("kind") == "atomic" and node.dir.is_dir()

    candidates = [(pinned.child(sid), child_path(ROOT, sid)), (pinned, ROOT)]
    source, path = next(((n, p) for n, p in candidates if holds(n, p)), (None, None))
    if source is None:
        raise DataError(f"{who} not found: no sleeve of that run in {' or '.join(str(n.dir) for n, _ in candidates)}")
    source_spec = nodes.get(path) or {}
    required = [source.file(k) for k in PIN_REQUIRED] + [source.file("weights", profile=p) for p in risk_profiles]
    missing = [f.name for f in required if not f.is_file()]
    if missing:
        raise DataError(f"{who} is incomplete: {source.dir} lacks {', '.join(missing)}")
    # Finished, idle, verified, and its files still what its ledger recorded.
    runlock.check_source_run(pinned.dir, required, who=who, hint=f"rerun run {pin!r}, or pin another run", whole=whole, ledger_required=False)
    health = read_json(source.file("health"))
    profile = source_spec.get("profile") or health.get("profile")
    if profile != spec.profile:
        raise DataError(
            f"{who} ({source.dir}) is a run of profile {profile!r}, not {spec.profile!r}; "
            f"pin a run of {spec.profile!r}"
        )
    direction = health.get("direction") or read_json(source.file("weights", profile=risk_profiles[0])).get("direction")
    want = spec.config["universe"].get("direction", "LONG")
    if direction != want:
        raise DataError(f"{who} ({source.dir}) has direction {direction!r}, but profile {spec.profile!r} is {want!r}")
    config = source_spec.get("config")
    new = (spec.config["backtest"]["train_window"], spec.config["backtest"]["test_window"])
    old = (config["backtest"]["train_window"], config["backtest"]["test_window"]) if config is not None else new
    if old != new:
        raise DataError(
            f"{who} ({source.dir}) used walk-forward windows train/test {old[0]}/{old[1]}, the manifest now "
            f"says {new[0]}/{new[1]}; sleeves must share windows (rerun it, or use --execute-sleeves)"
        )
    columns = read_parquet(source.file("returns")).columns
    absent = [p for p in risk_profiles if p not in columns]
    if absent:
        raise DataError(f"{who} has no risk profile(s) {', '.join(absent)} in {source.file('returns')}")
    return source, {"profile": profile, "direction": direction, "config": config,
                    "manifest_sha256": (resolved or {}).get("manifest_sha256")}  # fmt: skip


def pin_source(ctx: RunContext, node_path: str) -> Node:
    """The checked sleeve directory pinned node ``node_path`` reuses (see :func:`resolve_pin`)."""
    return resolve_pin(ctx.spec(node_path), ctx.runs_root, ctx.plan.risk_profiles, ctx.run_id)[0]


def pinned_sleeve(node: NodeSpec, profiles: list[str], run_id: str, runs_root: Path, source: dict, note: dict) -> dict:
    """A pinned sleeve's artifacts, copied from its ``source`` files (``returns``, ``health``,
    ``sign_test``, ``weights`` per risk profile, and ``provenance`` / ``resolved`` when the source
    has them), with a ``provenance`` recording where they came from.

    Raises
    ------
    DataError
        The pin does not resolve or is unusable (see :func:`resolve_pin`).
    """
    src, info = resolve_pin(node, runs_root, profiles, run_id)
    note["source"] = str(src.dir)
    paths = [source["health"], source["sign_test"], *source["weights"]]
    data = [read_bytes(f) for f in paths]  # copied as they are: their names are the source's (one layout)
    provenance = {
        "computed": False,
        "run_id": run_id,
        "profile": node.profile,
        "sleeve": node.sleeve_id,
        "pinned_run_id": node.pin,
        "source": str(src.dir),
        "source_profile": info["profile"],
        "source_manifest_sha256": info["manifest_sha256"],
        "source_config": info["config"],
        "source_provenance": read_json(source["provenance"]) if "provenance" in source else None,
        "copied": sorted(Path(f).name for f in paths) + [Path(source["returns"]).name],
        "sha256": {Path(f).name: hashlib.sha256(b).hexdigest() for f, b in zip(paths, data, strict=True)},
    }
    return {"returns": read_parquet(source["returns"])[profiles], "health": data[0], "sign_test": data[1],
            "provenance": provenance, "weights": dict(zip(profiles, data[2:], strict=True))}  # fmt: skip
