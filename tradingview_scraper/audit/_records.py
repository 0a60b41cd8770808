"""Writing the ledger: the genesis entry of a run and one entry per stage."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import PipelineError, one_line
from ..layout import Node
from ._ledger import (
    GENESIS_PREV_HASH,
    _hashed,
    _ledger_path,
    _normalise,
    _relative,
    _run_dir_of,
    append,
    genesis_for,
    locked,
    write_entry,
)

#: Libraries whose installed versions the genesis entry records (never imported).
KEY_LIBRARIES = ("snakemake", "ray", "pandas", "numpy", "pyarrow", "skfolio", "scipy")

OUTCOMES = ("success", "error")


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None (no repo, no git, any failure)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    sha = proc.stdout.strip()
    if proc.returncode != 0 or not sha or any(c not in "0123456789abcdef" for c in sha):
        return None
    return sha


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def genesis(
    run_dir: Path | str | Node,
    *,
    run_id: str,
    meta_profile: str,
    manifest_path: Path | str,
    manifest_sha256: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the genesis entry of a run's ledger (the run directory created if missing), once.

    Returns
    -------
    dict
        The genesis entry (an existing one of ``run_id`` as it is): ``seq`` 0, ``prev_hash``
        :data:`GENESIS_PREV_HASH`, ``run_id``, ``meta_profile`` (the profile the run executes),
        ``manifest`` (path and sha256 of the manifest the run was resolved from),
        ``package_version``, ``git_commit``, ``python``, ``platform``, ``libraries`` (versions
        of :data:`KEY_LIBRARIES`), ``extra`` (further JSON-able facts) and ``hash``.

    Raises
    ------
    PipelineError
        The ledger starts with the genesis of another run id, or with no genesis entry at all.
    """
    _ledger_path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    with locked(run_dir) as ledger:
        if (first := genesis_for(run_dir, run_id)) is not None:
            return first
        payload = {
            "run_id": run_id,
            "meta_profile": meta_profile,
            "manifest": {"path": Path(manifest_path).as_posix(), "sha256": manifest_sha256},
            "package_version": __version__,
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": {name: _version(name) for name in KEY_LIBRARIES},
            "extra": extra or {},
        }
        return write_entry(ledger, 0, GENESIS_PREV_HASH, "genesis", payload)


def record_stage(
    run_dir: Path | str | Node,
    *,
    stage: str,
    node: Path | str | Node,
    params: dict[str, Any],
    inputs: list[Any],
    outputs: list[Any],
    outcome: str,
    error: str | None = None,
    duration_s: float | None = None,
    cpu_s: float | None = None,
) -> dict[str, Any]:
    """Append one stage entry to the run's ledger (under its thread lock and ``flock``) and return it.

    Parameters
    ----------
    node : path-like or Node
        The node the stage worked on; recorded relative to the run directory ``run_dir``.
    params : dict
        JSON-able parameters of the stage.
    inputs, outputs : list of path-like
        Files read / written, relative to ``run_dir`` unless they already point inside it from
        the working directory; each recorded as ``{"path", "sha256"}`` (None if missing),
        an output, and an input from outside the run, also with its ``"stat"`` fingerprint.
    outcome : {"success", "error"}
        How the stage ended; ``error`` is its message.
    duration_s, cpu_s : float, optional
        Wall-clock seconds, and CPU seconds of the thread that ran the stage (its cost in the
        driver: what it sent to Ray's workers is not counted).

    Raises
    ------
    PipelineError
        The ledger is absent or empty (call :func:`genesis` first), does not verify or ends
        with an incomplete line, or ``params`` is not JSON-serialisable.
    ValueError
        ``outcome`` is neither ``"success"`` nor ``"error"``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit: outcome must be one of {OUTCOMES}, got {outcome!r}")
    root, ledger = _run_dir_of(run_dir), _ledger_path(run_dir)
    no_genesis = f"audit: no ledger at {ledger}; start the run with audit.genesis() before recording stage {stage!r}"
    if not ledger.is_file():
        raise PipelineError(no_genesis)
    payload = {
        "stage": stage,
        "node": _relative(root, node),
        "params": _normalise(params, f"params of stage {stage!r}"),
        "inputs": _hashed(root, inputs),
        "outputs": _hashed(root, outputs, stat=True),
        "outcome": outcome,
        "error": error,
        "duration_s": None if duration_s is None else round(float(duration_s), 6),
        "cpu_s": None if cpu_s is None else round(float(cpu_s), 6),
    }
    return append(run_dir, "stage", payload, no_genesis)


class stage_audit:  # noqa: N801 - used like a function: ``with stage_audit(...):``
    """Context manager recording one stage in the ledger when its block ends (see :func:`record_stage`).

    ``inputs``, ``outputs`` and ``params`` are attributes the block may change; outputs are
    hashed on exit, and the entry recorded is ``.entry``. A block that raises is recorded
    with ``outcome="error"`` and its exception's one line, and the exception propagates
    (with a note if recording fails too). ``duration_s`` is the block's wall-clock time,
    ``cpu_s`` the CPU time of the thread that ran it.

    Examples
    --------
    >>> with stage_audit(run, "flatten", ".", {"profile": "hrp"}, ins, outs):  # doctest: +SKIP
    ...     write_flattened(...)
    """

    def __init__(self, run_dir, stage: str, node, params: dict[str, Any], inputs: list[Any], outputs: list[Any]) -> None:
        self.run_dir, self.stage, self.node, self.params = run_dir, stage, node, params
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.entry: dict[str, Any] | None = None

    def __enter__(self) -> stage_audit:
        self._start, self._cpu_start = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        record = dict(
            stage=self.stage, node=self.node, params=self.params, inputs=self.inputs, outputs=self.outputs,
            duration_s=time.perf_counter() - self._start, cpu_s=time.thread_time() - self._cpu_start,
        )  # fmt: skip
        if exc is None:
            self.entry = record_stage(self.run_dir, outcome="success", **record)
            return False
        try:
            self.entry = record_stage(self.run_dir, outcome="error", error=one_line(exc), **record)
        except Exception as audit_exc:  # never mask the stage's own failure
            exc.add_note(f"audit: could not record the failure of stage {self.stage!r}: {audit_exc}")
        return False
