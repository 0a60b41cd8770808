"""Health gates: one policy for every node, applied to a sleeve's walk-forward, a meta node's children and its own walk-forward."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from .errors import MetaError, SleeveError
from .layout import ROOT

if TYPE_CHECKING:
    from .manifest import NodeSpec


def unhealthy_profiles(health: dict, min_success_ratio: float, risk_profiles: list[str] | None = None) -> list[str]:
    """Risk profiles of a health record whose success ratio is below the threshold.

    Parameters
    ----------
    health : dict
        A ``health.json`` record (``{"profiles": {rp: {"windows_attempted", ...}}}``).
    min_success_ratio : float
        Smallest accepted ``windows_succeeded / windows_attempted``.
    risk_profiles : list of str, optional
        The profiles the run consumes: only these are judged, and each must be present.
        Default: every profile of the record.

    Returns
    -------
    list of str
        One description per failing profile, e.g. ``"hrp (3/40 windows succeeded)"``.
        A missing or empty record, a missing profile or zero attempted windows counts
        as a failure, never as healthy.
    """
    profiles = (health or {}).get("profiles") or {}
    if not profiles:
        return ["<no health record>"]
    bad = []
    for rp in profiles if risk_profiles is None else risk_profiles:
        h = profiles.get(rp)
        if not h:
            bad.append(f"{rp} (no health record)")
            continue
        attempted = int(h.get("windows_attempted", 0))
        ok = int(h.get("windows_succeeded", 0))
        if attempted <= 0 or ok / attempted < min_success_ratio:
            bad.append(f"{rp} ({ok}/{attempted} windows succeeded)")
    return bad


def health_gate(
    node: NodeSpec,
    health: dict,
    policy: dict,
    risk_profiles: list[str] | None = None,
    where: str | None = None,
) -> str | None:
    """The health verdict on one node (atomic sleeve or meta node) from its walk-forward results.

    Parameters
    ----------
    node : NodeSpec
        The node judged: the message names it by its label (``sleeve 'tech'``, ``meta
        profile 'meta_demo'``) and the error is of its kind.
    health : dict
        Its health record, ``{"profiles": {rp: {"windows_attempted", "windows_succeeded", ...}}}``
        (``health.json`` of a sleeve; a meta node's ``walk_forward`` blocks).
    policy : dict
        The manifest's ``health`` block: ``min_success_ratio`` and ``on_unhealthy``
        (``"error"`` or ``"warn"``).
    risk_profiles : list of str, optional
        The profiles judged (see :func:`unhealthy_profiles`).
    where : str, optional
        Where the record comes from (a file, a node path), for the message.

    Returns
    -------
    str or None
        None when healthy; the warning line when unhealthy and ``on_unhealthy`` is ``"warn"``.

    Raises
    ------
    SleeveError, MetaError
        Unhealthy and ``on_unhealthy`` is ``"error"`` (MetaError for a meta node): one line
        naming the node, the failing profiles and the threshold.
    """
    threshold = float(policy["min_success_ratio"])
    bad = unhealthy_profiles(health, threshold, risk_profiles)
    if not bad:
        return None
    msg = (
        f"{node.label} is unhealthy: {', '.join(bad)}{f' in {where}' if where else ''}; the minimum success ratio is "
        f"{threshold:.0%} (health.min_success_ratio)"
    )
    if policy.get("on_unhealthy", "error") == "error":
        raise (MetaError if node.is_meta else SleeveError)(msg)
    return f"{msg}; continuing (health.on_unhealthy = warn)"


def sign_gate(who: str, sign_test: dict | None, direction: str, where: str | None = None) -> None:
    """The sign-test verdict on one atomic sleeve: its streams provably carry its direction.

    Raises
    ------
    SleeveError
        The record is missing or did not pass (always: a stream of unknown sign cannot be
        allocated), naming the sleeve and where the record comes from.
    """
    if (sign_test or {}).get("passed") is not True:
        raise SleeveError(
            f"{who}: sign test missing or failed{f' ({where})' if where else ''}; its streams do not provably "
            f"carry direction {direction}"
        )


def sleeve_verdict(node: NodeSpec, health: dict, where: str | None = None) -> str | None:
    """What a computed sleeve's own job says of its walk-forward; None when healthy.

    A standalone run (the sleeve is the run's root) judges under the sleeve's ``health`` policy
    (:func:`health_gate`; ``where``: its ``health.json``) and says so to its user; a verdict that
    would stop says that a meta run consuming the sleeve stops. Below a meta node the parent's
    gate (:func:`children_gate`) applies the policy later: the line is for the sleeve's log.
    """
    if node.path != ROOT:
        bad = unhealthy_profiles(health, float(node.config["health"]["min_success_ratio"]))
        return f"sleeve {node.sleeve_id} is unhealthy: {', '.join(bad)} (a meta run consuming it stops)" if bad else None
    try:
        return health_gate(node, health, node.config["health"], where=where)
    except SleeveError as exc:
        return f"{exc}; a meta run consuming it stops"


class ChildRecords(NamedTuple):
    """What the meta layer's gate reads of one child: its health record and sign test, and where from."""

    spec: NodeSpec
    health: dict | None
    sign_test: dict | None
    health_from: str | None = None
    sign_test_from: str | None = None


def children_gate(parent: NodeSpec, children: Iterable[ChildRecords], risk_profiles: list[str]) -> list[str]:
    """The meta layer's gate over its atomic children, under the parent's ``health`` policy.

    Each atomic child's sign test must pass (:func:`sign_gate`) and every risk profile the
    run consumes must be healthy (:func:`health_gate`; a missing record is unhealthy). A
    meta child is skipped: it passed its own gate on its meta walk-forward
    (:func:`walk_forward_gate`); so is an external sleeve: its stream's checks (finite,
    above -100%) refused the file when it was read (:func:`external.read_returns`).

    Returns
    -------
    list of str
        The warnings a ``health.on_unhealthy = "warn"`` policy let through.

    Raises
    ------
    SleeveError
        Naming the first failing sleeve, what failed and the threshold.
    """
    warnings = []
    for child in children:
        if child.spec.kind != "atomic":
            continue
        direction = child.spec.config["universe"].get("direction", "LONG")
        sign_gate(child.spec.label, child.sign_test, direction, child.sign_test_from)
        warning = health_gate(child.spec, child.health or {}, parent.config["health"], risk_profiles, child.health_from)
        if warning:
            warnings.append(warning)
    return warnings


def walk_forward_gate(node: NodeSpec, profile: str, record: dict) -> str | None:
    """A meta node's gate on its own meta walk-forward of ``profile``, under its ``health`` policy.

    ``record`` is its ``meta/weights_<profile>.json`` content (:func:`meta.meta_optimize`'s
    record). Returns the warning let through, or None; raises MetaError like
    :func:`health_gate`.
    """
    health = {"profiles": {profile: record["walk_forward"]}}
    return health_gate(node, health, node.config["health"], [profile], "its meta walk-forward")
