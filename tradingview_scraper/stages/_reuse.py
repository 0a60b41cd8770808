"""Reuse across runs: a step's outputs taken from an earlier run whose job was the same (the runs root's node store).

A job is keyed by what decides a rerun inside a run: its step, node and risk profile, its
rule's params (which carry its code trigger and the content of what it reads from outside
the run) and the sha256 of each named input it reads (the ledger's digests). The store keeps
one small JSON entry per key: the run that computed (or last reused) the job, and the
run-relative path and sha256 of each output. A later job with the same key copies those files
into its own outputs when every one still has its recorded bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import audit, steps
from ..errors import PipelineError
from ..layout import copy_artifact, dumps_json, remove_artifact, run_dir, write_store_file
from ..run import RunContext
from ._common import _named

#: Version of the key's recipe: a change of what the key covers invalidates every entry.
_KEY_VERSION = 1


def _inside(ctx: RunContext, path: str) -> bool:
    root = os.path.abspath(ctx.run_dir)
    return os.path.abspath(path).startswith(root.rstrip(os.sep) + os.sep)


def _relative(ctx: RunContext, path: str) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(ctx.run_dir))).as_posix()


def _map(value, fn):
    return fn(value) if isinstance(value, str) else [fn(v) for v in value]


def job_key(step: steps.Step, ctx: RunContext, node_path: str, profile: str | None, files: dict, outs: dict, params) -> str:
    """The key of a job (sha256 hex): step, node, risk profile, params, output names and input digests.

    ``files`` / ``outs``: the rule's named inputs and outputs (plain paths); ``params``: the
    rule's evaluated params (name -> value). An input the table marks unread (an edge of the
    DAG) does not count; one from outside the run counts by its path, its content being in
    the params (every :class:`steps.Outside` input has a ``content`` param).
    """
    read = {}
    for name, value in files.items():
        spec = step.inputs.get(name.partition(":")[0])
        # an empty input (a sleeve on skfolio's data has no price file) is absent from a rule's `run:`
        if value != [] and (spec is None or getattr(spec, "read", True)):
            read[name] = value
    flat = [p for v in read.values() for p in ([v] if isinstance(v, str) else v)]
    sha = audit.digests(ctx.run_dir, [p for p in flat if _inside(ctx, p)])
    body = {
        "version": _KEY_VERSION,
        "step": step.name,
        "node": node_path,
        "profile": profile,
        "params": dict(params.items()),
        "inputs": {name: _map(v, lambda p: sha[p] if p in sha else f"outside:{p}") for name, v in sorted(read.items())},
        "outputs": {name: _map(v, lambda p: _relative(ctx, p)) for name, v in sorted(outs.items())},
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _entry_path(store: Path, key: str) -> Path:
    return store / f"{key}.json"


def lookup(store: Path, key: str, ctx: RunContext, outs: dict) -> dict | None:
    """The store's entry of ``key`` when it names an earlier run's files for exactly these outputs, else None.

    An entry of this run is never used: a rerun inside a run computes, as its workflow decided.
    """
    try:
        entry = json.loads(_entry_path(store, key).read_text(encoding="utf-8"))
        run_dir(str(entry["run"]), ctx.runs_root)  # a run id, or no entry of ours
        for name, value in outs.items():
            items = [entry["outputs"][name]] if isinstance(value, str) else entry["outputs"][name]
            if [i["path"] for i in items] != [_relative(ctx, p) for p in ([value] if isinstance(value, str) else value)]:
                return None
            if not all(isinstance(i["sha256"], str) for i in items):
                return None
    except (OSError, ValueError, KeyError, TypeError, PipelineError):
        return None
    return None if entry["run"] == ctx.run_id else entry


def intact(entry: dict, ctx: RunContext) -> bool:
    """Whether every file an entry names still has its recorded sha256 (read only)."""
    source = run_dir(str(entry["run"]), ctx.runs_root)
    items = [i for v in entry["outputs"].values() for i in ([v] if isinstance(v, dict) else v)]
    try:
        return all(audit.file_sha256(source / i["path"]) == i["sha256"] for i in items)
    except OSError:
        return False


def reusable(step: steps.Step, ctx: RunContext, node_path: str, profile: str | None, *, input, output, params) -> bool:
    """Whether a job of ``step`` on these files and params would be reused now (nothing written).

    The run's owner asks before it starts a private Ray cluster: a run whose every sleeve is
    reused needs none.
    """
    store = ctx.store("nodes") if step.reuse else None
    if store is None:
        return False
    outs = _named(output)
    entry = lookup(store, job_key(step, ctx, node_path, profile, _named(input), outs, params), ctx, outs)
    return entry is not None and intact(entry, ctx)


def take(entry: dict, ctx: RunContext, outs: dict) -> dict | None:
    """Copy an entry's files into this job's outputs and check each against its recorded sha256.

    Returns output name -> the earlier run-relative path(s); None, with nothing left at the
    outputs, when a file is gone or its bytes are not the recorded ones (a file edited in
    place keeps no trace in its mtime: only its hash tells).
    """
    source = run_dir(str(entry["run"]), ctx.runs_root)
    linked = []
    try:
        for name, value in outs.items():
            items = [entry["outputs"][name]] if isinstance(value, str) else entry["outputs"][name]
            for path, item in zip([value] if isinstance(value, str) else value, items, strict=True):
                linked.append(copy_artifact(source / item["path"], path))
                if audit.file_sha256(path) != item["sha256"]:
                    raise ValueError(f"{source / item['path']} changed since it was recorded")
    except (OSError, ValueError):
        for path in linked:
            remove_artifact(path)
        return None
    return {name: _map(value, lambda p: _relative(ctx, p)) for name, value in outs.items()}


def remember(store: Path, key: str, ctx: RunContext, outs: dict, entry: dict | None) -> None:
    """Record this run's outputs of a job under ``key`` (replacing an older entry), from its ledger ``entry``."""
    if entry is None:
        return
    sha = {o["path"]: o.get("sha256") for o in entry.get("outputs", [])}
    outputs = {}
    for name, value in outs.items():
        items = _map(value, lambda p: {"path": _relative(ctx, p), "sha256": sha.get(_relative(ctx, p))})
        if any(i["sha256"] is None for i in ([items] if isinstance(items, dict) else items)):
            return  # an output the ledger did not digest: nothing to vouch for
        outputs[name] = items
    params = {k: v for k, v in (entry.get("params") or {}).items() if k != "reused"}
    warnings = [w for w in entry.get("warnings", []) if isinstance(w, str)]
    record = {"run": ctx.run_id, "step": entry.get("stage"), "node": entry.get("node"), "params": params,
              "outputs": outputs, "warnings": warnings}  # fmt: skip
    write_store_file(_entry_path(store, key), dumps_json(record).encode())  # not an artifact of the job
