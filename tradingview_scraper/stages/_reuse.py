"""Reuse across runs: a step's outputs taken from an earlier run whose job was the same (the runs root's node store).

A job is keyed by what decides a rerun inside a run: its step, node and risk profile, its
rule's params (which carry its code trigger and the content of what it reads from outside
the run) and the sha256 of each named input it reads (the ledger's digests). The store keeps
one small JSON entry per key: the run that computed (or last reused) the job, and the sha256
of each output by its run-relative path (the key covers those paths). A later job with the
same key copies those files into its own outputs when every one still has its recorded bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import audit, steps
from ..errors import PipelineError
from ..layout import (
    atomic_write_bytes,
    dumps_json,
    remove_artifact,
    run_dir,
    store_file,
    write_store_file,
)
from ..run import RunContext
from ._common import _named

#: Version of the key's recipe: a change of what the key covers invalidates every entry.
_KEY_VERSION = 1


def _relative(ctx: RunContext, value: str | list[str]) -> str | list[str]:
    """A path, or a list of them, relative to the run directory (as the ledger records them)."""
    root = os.path.abspath(ctx.run_dir)
    rel = [Path(os.path.relpath(os.path.abspath(p), root)).as_posix() for p in ([value] if isinstance(value, str) else value)]
    return rel[0] if isinstance(value, str) else rel


def _paths(outs: dict) -> list[str]:
    """Every path of a rule's named files, in order."""
    return [p for v in outs.values() for p in ([v] if isinstance(v, str) else v)]


def job_key(step: steps.Step, ctx: RunContext, node_path: str, profile: str | None, files: dict, outs: dict, params) -> str:
    """The key of a job (sha256 hex): step, node, risk profile, params, output names and input digests.

    ``files`` / ``outs``: the rule's named inputs and outputs (plain paths); ``params``: the
    rule's evaluated params (name -> value). An input the table marks unread (an edge of the
    DAG) does not count; one from outside the run counts by its path, its content being in
    the params (every :class:`steps.Outside` input has a ``content`` param).
    """
    # an empty input (a sleeve on skfolio's data has no price file) is absent from a rule's `run:`
    read = {k: v for k, v in files.items() if v != [] and getattr(step.inputs.get(k.partition(":")[0]), "read", True)}
    inside = [p for p in _paths(read) if not _relative(ctx, p).startswith("../")]
    sha = audit.digests(ctx.run_dir, inside)

    def digest(path: str) -> str:
        return sha[path] if path in sha else f"outside:{path}"

    body = {
        "version": _KEY_VERSION,
        "step": step.name,
        "node": node_path,
        "profile": profile,
        "params": dict(params.items()),
        "inputs": {k: digest(v) if isinstance(v, str) else [digest(p) for p in v] for k, v in sorted(read.items())},
        "outputs": {k: _relative(ctx, v) for k, v in sorted(outs.items())},
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def lookup(store: Path, key: str, ctx: RunContext, outs: dict) -> dict | None:
    """The store's entry of ``key`` when it names an earlier run's digest of each of these outputs, else None.

    An entry of this run is never used: a rerun inside a run computes, as its workflow decided.
    """
    try:
        entry = json.loads(store_file(store, key, ".json").read_text(encoding="utf-8"))
        run_dir(entry["run"], ctx.runs_root)  # a run id, or no entry of ours
        if not all(isinstance(entry["outputs"][p], str) for p in _relative(ctx, _paths(outs))):
            return None
    except (OSError, ValueError, KeyError, TypeError, PipelineError):
        return None
    return None if entry["run"] == ctx.run_id else entry


def reusable(step: steps.Step, ctx: RunContext, node_path: str, profile: str | None, *, input, output, params) -> bool:
    """Whether a job of ``step`` on these files and params would be reused now (nothing written).

    The run's owner asks before it starts a private Ray cluster: a run whose every sleeve is
    reused needs none.
    """
    store = ctx.store("nodes") if step.reuse else None
    outs = _named(output)
    entry = lookup(store, job_key(step, ctx, node_path, profile, _named(input), outs, params), ctx, outs) if store else None
    if entry is None:
        return False
    source = run_dir(entry["run"], ctx.runs_root)
    try:
        return all(audit.file_sha256(source / path) == sha for path, sha in entry["outputs"].items())
    except OSError:
        return False


def take(entry: dict, ctx: RunContext, outs: dict) -> dict | None:
    """Copy an entry's files into this job's outputs and check each against its recorded sha256.

    Returns output name -> the earlier run-relative path(s); None, with nothing left at the
    outputs, when a file is gone or its bytes are not the recorded ones (a file edited in
    place keeps no trace in its mtime: only its hash tells).
    """
    source = run_dir(entry["run"], ctx.runs_root)
    written = []
    try:
        for path in _paths(outs):
            rel = _relative(ctx, path)
            # A copy, not a hard link: each run owns its bytes, so a file edited in place in one run
            # never damages another, and Snakemake's touch of an output never changes another run's file.
            written.append(atomic_write_bytes(path, (source / rel).read_bytes()))
            if audit.file_sha256(path) != entry["outputs"][rel]:
                raise ValueError(f"{source / rel} changed since it was recorded")
    except (OSError, ValueError):
        for path in written:
            remove_artifact(path)
        return None
    return {name: _relative(ctx, value) for name, value in outs.items()}


def remember(store: Path, key: str, ctx: RunContext, outs: dict, entry: dict | None) -> None:
    """Record this run's outputs of a job under ``key`` (replacing an older entry), from its ledger ``entry``."""
    if entry is None:
        return
    sha = {o["path"]: o.get("sha256") for o in entry.get("outputs", [])}
    outputs = {p: sha.get(p) for p in _relative(ctx, _paths(outs))}
    if None in outputs.values():
        return  # an output the ledger did not digest: nothing to vouch for
    params = {k: v for k, v in (entry.get("params") or {}).items() if k != "reused"}
    warnings = [w for w in entry.get("warnings", []) if isinstance(w, str)]
    record = {"run": ctx.run_id, "step": entry.get("stage"), "node": entry.get("node"), "params": params,
              "outputs": outputs, "warnings": warnings}  # fmt: skip
    write_store_file(store_file(store, key, ".json"), dumps_json(record).encode())  # not an artifact of the job
