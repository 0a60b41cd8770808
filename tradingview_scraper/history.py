"""Run history: the runs of a runs root as their ledgers and artifacts record them, the latest one, pruning.

The one module that lists and reads runs (``tvs runs``, ``tvs prune``, ``--previous-run
latest``). Everything comes from what a run wrote (its ledger's genesis and stage entries,
its resolved manifest) and from its lock; nothing is recomputed. A directory of the runs root
is a run when its ledger starts with the genesis entry of a run of the same name; anything
else is *not a run* and is never touched.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import audit, runlock
from .errors import ConfigError, PipelineError, RunInProgressError
from .layout import NODE_FILES, ROOT, RUNS_ROOT, STORE, Node, check_name, run_dir

#: The word ``--previous-run`` takes for the newest finished run of the same profile.
LATEST = "latest"


@dataclass
class RunInfo:
    """One run of a runs root, as its ledger, artifacts and lock record it.

    Attributes
    ----------
    run_id, dir : str, Path
    profile : str
        The profile the run executes (its genesis ``meta_profile``).
    started : str
        The genesis entry's time (ISO 8601, UTC): runs of a profile are ordered by it.
    status : str
        ``running`` (another live process holds its lock),
        ``failed`` (a stage failure no later success repaired), ``damaged`` (its ledger does
        not verify), ``finished`` (its root's final artifact is recorded: ``report.md`` of a
        meta run, ``returns.parquet`` of a standalone sleeve), else ``incomplete``.
    detail : str
        Why, for a status other than ``finished`` (the failure's line, the lock's pid).
    data_end : str or None
        The last date of the meta stream, as the report step recorded it (None: a run that
        has not reported, a standalone sleeve, or a run older than the record).
    sharpe : dict of str -> float or None
        Each risk profile's out-of-sample Sharpe, as the report step recorded it.
    pins, previous : set of str
        The runs it pins and names as previous run (its genesis and its stages' inputs).
    """

    run_id: str
    dir: Path
    profile: str
    started: str
    status: str
    detail: str = ""
    data_end: str | None = None
    sharpe: dict[str, float | None] = field(default_factory=dict)
    pins: set[str] = field(default_factory=set)
    previous: set[str] = field(default_factory=set)

    def as_dict(self) -> dict:
        """The run as JSON data (``tvs runs --json``)."""
        out = {**asdict(self), "dir": str(self.dir), "pins": sorted(self.pins)}
        out["previous_run"] = sorted(out.pop("previous"))
        return out


def read_run(path: Path | str) -> RunInfo | str:
    """The run at ``path``, or why it is not a run (one line).

    A symlink, a file, a directory without a ledger, a ledger that does not start with a
    genesis entry, or one of another run id: not a run.
    """
    path = Path(path)
    if path.is_symlink():
        return "a symlink"
    if not path.is_dir():
        return "not a directory"
    ledger = Node(path).file("audit")
    if not ledger.is_file() or ledger.stat().st_size == 0:
        holder = runlock.holder(path)
        return f"starting (pid {holder} holds its lock; no ledger yet)" if holder else "no audit ledger (audit.jsonl)"
    genesis = audit.genesis_of(path)
    if genesis is None:
        return "its ledger does not start with a genesis entry"
    if genesis.get("run_id") != path.name:
        return f"its ledger is run {genesis.get('run_id')!r}'s"
    extra = genesis.get("extra") or {}
    info = RunInfo(
        run_id=path.name, dir=path, profile=str(genesis.get("meta_profile")), started=str(genesis.get("time", "")),
        status="incomplete", pins=set(extra.get("pins") or ()), previous={extra["previous_run"]} if extra.get("previous_run") else set(),
    )  # fmt: skip
    _read_stages(info)
    info.status, info.detail = _status(info)
    return info


def _read_stages(info: RunInfo) -> None:
    """What the successful stage entries say: the report's headline, the runs read (inputs in sibling run directories)."""
    for entry in audit.stage_entries(info.dir, "success"):
        params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
        if entry.get("stage") == "report" and entry.get("node") == ROOT and isinstance(params.get("headline"), dict):
            info.data_end = params["headline"].get("data_end")
            pairs = params["headline"].get("sharpe") or []
            info.sharpe = {str(p[0]): p[1] for p in pairs if isinstance(p, list) and len(p) == 2}
        if entry.get("stage") == "rebalance" and params.get("previous_run"):
            info.previous.add(str(params["previous_run"]))
        if entry.get("stage") == "pinned_sleeve":
            for item in entry.get("inputs") or ():
                parts = Path(str(item.get("path", "") if isinstance(item, dict) else item)).parts
                if len(parts) > 2 and parts[0] == ".." and parts[1] != info.run_id:
                    info.pins.add(parts[1])


def _status(info: RunInfo) -> tuple[str, str]:
    """The run's status and why (see :class:`RunInfo`)."""
    holder = runlock.holder(info.dir)
    if holder is not None:
        return "running", f"pid {holder} holds its lock"
    try:
        failure = audit.unfinished(info.dir)
        recorded = set(audit.recorded(info.dir))
    except PipelineError as exc:
        return "damaged", str(exc)
    if failure is not None:
        return "failed", failure[1]
    resolved = NODE_FILES["resolved"]
    try:
        meta = json.loads(Node(info.dir).file("resolved").read_text())["nodes"][ROOT]["kind"] == "meta"
    except (OSError, ValueError, KeyError, TypeError):
        return "incomplete", f"no readable {resolved}"
    final = NODE_FILES["report_md" if meta else "returns"]  # ledger paths are relative to the run directory
    if resolved in recorded and final in recorded:
        return "finished", ""
    return "incomplete", f"{final} not recorded"


def scan(runs_root: Path | str = RUNS_ROOT) -> tuple[list[RunInfo], list[tuple[str, str]]]:
    """Every run of ``runs_root`` (oldest first), and every other entry with why it is not a run.

    Raises
    ------
    ConfigError
        ``runs_root`` is not a directory.
    """
    root = Path(runs_root)
    if root == RUNS_ROOT and not root.exists():
        return [], []  # the default root appears with the first run: nothing has run here yet
    if not root.is_dir():
        raise ConfigError(f"runs root {root} is not a directory (give --runs-root DIR; default {RUNS_ROOT})")
    runs, others = [], []
    for entry in sorted(root.iterdir()):
        if entry.name == STORE:
            continue
        try:
            path = run_dir(check_name(entry.name, "run id"), root)
        except ConfigError:
            others.append((entry.name, "not a run id"))
            continue
        info = read_run(path)
        if isinstance(info, str):
            others.append((entry.name, info))
        else:
            runs.append(info)
    runs.sort(key=lambda r: (r.started, r.run_id))
    return runs, others


def runs(runs_root: Path | str = RUNS_ROOT, profile: str | None = None) -> list[RunInfo]:
    """The runs of ``runs_root`` (of ``profile`` only, if given), oldest first.

    Raises
    ------
    ConfigError
        ``runs_root`` is not a directory, or no run there executes ``profile`` (the
        message names the profiles that have runs).
    """
    found, _ = scan(runs_root)
    return _of_profile(found, profile, runs_root)


def _of_profile(found: list[RunInfo], profile: str | None, runs_root: Path | str) -> list[RunInfo]:
    if profile is None:
        return found
    mine = [r for r in found if r.profile == profile]
    if not mine:
        have = sorted({r.profile for r in found})
        raise ConfigError(
            f"no run of profile {profile!r} in {runs_root}"
            + (f"; the profiles with runs there: {', '.join(have)}" if have else "; it holds no run")
        )
    return mine


def latest(profile: str, runs_root: Path | str = RUNS_ROOT, *, exclude: str | None = None) -> str:
    """The id of the newest finished run of ``profile`` in ``runs_root`` (``exclude``: a run id left out).

    Raises
    ------
    ConfigError
        No finished run of ``profile`` there (the message says what there is).
    """
    root = Path(runs_root)
    found = [r for r in (scan(root)[0] if root.is_dir() else []) if r.profile == profile and r.run_id != exclude]
    done = [r for r in found if r.status == "finished"]
    if not done:
        what = f"its runs there are {', '.join(f'{r.run_id} ({r.status})' for r in found[-3:])}" if found else "there is none"
        raise ConfigError(f"--previous-run {LATEST}: no finished run of profile {profile!r} in {root}; {what}")
    return done[-1].run_id


@dataclass
class PrunePlan:
    """What :func:`prune` deletes and keeps, each with its reason."""

    delete: list[tuple[RunInfo, str]]
    keep: list[tuple[RunInfo, str]]
    others: list[tuple[str, str]]


def manifest_pins(path: Path | str) -> set[str]:
    """The run ids the manifest at ``path`` pins (a sleeve's ``run_id``): its next runs read them.

    Raises
    ------
    ConfigError
        The manifest is missing or invalid.
    """
    from .manifest import load_manifest

    manifest, _ = load_manifest(path)
    return {
        str(s["run_id"])
        for block in manifest.get("profiles", {}).values()
        for s in (block.get("sleeves") or [])
        if isinstance(s, dict) and s.get("run_id")
    }


def prune_plan(
    keep: int, runs_root: Path | str = RUNS_ROOT, profile: str | None = None, *, pinned: dict[str, str] | None = None
) -> PrunePlan:
    """Which runs ``tvs prune --keep keep`` deletes, and why every other run stays.

    Kept in their own right: the ``keep`` newest runs of each profile (by start), the newest
    finished run of each profile (what ``--previous-run latest`` names), every run still
    running, and (with ``profile``) every run of another profile. Kept for them: every
    run a kept run pins (and what that run pins, and so on), and the previous run of each run
    kept in its own right (its book and change view came from it; the book of a run kept only
    as a previous run was consumed already, so a daily chain of ``--previous-run latest``
    runs does not keep its whole history), and every run ``pinned`` names (run id -> where it
    is pinned, e.g. the manifest: :func:`manifest_pins`), with what it pins. Everything else of
    the profile goes; entries that are not runs are left alone.

    Raises
    ------
    ConfigError
        ``keep`` is not a positive integer, the runs root is not a directory, no run executes
        ``profile``, or a run is starting and has not recorded yet which runs it reads.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"--keep {keep!r} must be a positive integer: the newest run of a profile is always kept")
    found, others = scan(runs_root)
    starting = [(name, why) for name, why in others if why.startswith("starting")]
    if starting:
        raise ConfigError(
            f"run {starting[0][0]} is {starting[0][1]}: the runs it reads are not known yet; prune again in a moment"
        )
    scope = {r.run_id for r in _of_profile(found, profile, runs_root)}
    by_id = {r.run_id: r for r in found}
    reason: dict[str, str] = {}
    newest: dict[str, list[RunInfo]] = {}
    for r in reversed(found):  # newest first
        if r.run_id not in scope:
            reason[r.run_id] = f"profile {r.profile} is not pruned"
        elif r.status == "running":
            reason[r.run_id] = f"running ({r.detail})"
        elif len(newest.setdefault(r.profile, [])) < keep:
            newest[r.profile].append(r)
            reason[r.run_id] = f"one of the {keep} newest runs of {r.profile}"
    for r in reversed(found):  # a failed morning does not cost the last good book
        if r.run_id in scope and r.status == "finished" and r.run_id not in reason:
            if not any(by_id[k].profile == r.profile and by_id[k].status == "finished" for k in reason):
                reason[r.run_id] = f"the newest finished run of {r.profile} (--previous-run {LATEST})"
    todo = [(rid, True) for rid in reason]
    for rid, where in sorted((pinned or {}).items()):
        if rid in by_id and rid not in reason:
            reason[rid] = f"pinned in {where}"
            todo.append((rid, False))
    while todo:
        rid, anchor = todo.pop()
        r = by_id[rid]
        refs = [(p, f"pinned by {rid}") for p in sorted(r.pins)]
        refs += [(p, f"previous run of {rid}") for p in sorted(r.previous)] if anchor else []
        for ref, why in refs:
            if ref in by_id and ref not in reason:
                reason[ref] = why
                todo.append((ref, False))
    return PrunePlan(
        delete=[(r, f"older than the {keep} newest runs of {r.profile}") for r in found if r.run_id not in reason],
        keep=[(r, reason[r.run_id]) for r in found if r.run_id in reason],
        others=others,
    )


def prune(plan: PrunePlan) -> tuple[list[RunInfo], list[tuple[RunInfo, str]]]:
    """Delete the runs ``plan`` deletes, each under its own lock (a run started since is skipped).

    Returns
    -------
    deleted : list of RunInfo
    skipped : list of (RunInfo, reason)
    """
    deleted, skipped = [], []
    for info, _ in plan.delete:
        try:
            runlock.acquire(info.dir, info.run_id)
        except (RunInProgressError, ConfigError) as exc:
            skipped.append((info, str(exc)))
            continue
        try:
            shutil.rmtree(info.dir)
        finally:
            runlock.release(info.dir)
        deleted.append(info)
    return deleted, skipped
