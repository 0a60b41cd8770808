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
from ._hashing import _canonical, _normalise
from ._ledger import (
    GENESIS_PREV_HASH,
    _append_line,
    _hashed,
    _ledger_path,
    _locked,
    _make_entry,
    _read_first_entry,
    _read_last_entry,
    _relative,
    _run_dir_of,
)

#: Libraries whose installed versions the genesis entry records (never imported).
KEY_LIBRARIES = ("snakemake", "ray", "pandas", "numpy", "pyarrow", "skfolio", "scipy")

OUTCOMES = ("success", "error")


# --------------------------------------------------------------------------- genesis


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None (no repo, no git, any failure)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    sha = proc.stdout.strip()
    if proc.returncode != 0 or not sha or any(c not in "0123456789abcdef" for c in sha):
        return None
    return sha


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def genesis(
    run_dir: Path | str | Node,
    *,
    run_id: str,
    meta_profile: str,
    manifest_path: Path | str,
    manifest_sha256: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the genesis entry of a run's ledger, once.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory (created if missing).
    run_id : str
        The run id the ledger belongs to.
    meta_profile : str
        The (meta or atomic) profile the run executes.
    manifest_path : path-like
        The manifest the run was resolved from.
    manifest_sha256 : str
        sha256 of that manifest.
    extra : dict, optional
        Further JSON-able facts to record under ``extra``.

    Returns
    -------
    dict
        The genesis entry: ``seq`` 0, ``prev_hash`` ``"0" * 64``, ``kind`` ``"genesis"``,
        ``run_id``, ``meta_profile``, ``manifest`` (path, sha256), ``package_version``,
        ``git_commit`` (None outside a git checkout), ``python``, ``platform``,
        ``libraries`` (installed versions of the key libraries), ``extra`` and ``hash``.

    Raises
    ------
    PipelineError
        If the ledger already starts with the genesis of a different run id, or does not
        start with a genesis entry at all.

    Notes
    -----
    Idempotent: if the ledger already holds the genesis of ``run_id``, that entry is
    returned unchanged and nothing is written.
    """
    ledger = _ledger_path(run_dir)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with _locked(ledger):
        if ledger.exists() and ledger.stat().st_size > 0:
            first = _read_first_entry(ledger)
            if first is None or first.get("kind") != "genesis":
                raise PipelineError(f"audit: {ledger} does not start with a genesis entry")
            if first.get("run_id") != run_id:
                raise PipelineError(
                    f"audit: {ledger} belongs to run {first.get('run_id')!r}, not {run_id!r}; "
                    "use a fresh run directory for a new run id"
                )
            return first
        payload = {
            "run_id": run_id,
            "meta_profile": meta_profile,
            "manifest": {"path": Path(manifest_path).as_posix(), "sha256": manifest_sha256},
            "package_version": __version__,
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": _library_versions(),
            "extra": extra or {},
        }
        entry = _make_entry(0, GENESIS_PREV_HASH, "genesis", payload)
        _append_line(ledger, _canonical(entry) + "\n")
        return entry


# --------------------------------------------------------------------------- stage records


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
    """Append one stage entry to the run's ledger.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory; its ledger must already hold a genesis entry.
    stage : str
        Stage name, e.g. ``"sleeve"``, ``"meta_returns"``.
    node : path-like or Node
        The node the stage worked on; recorded relative to ``run_dir`` (``"."`` = root).
    params : dict
        JSON-able parameters of the stage.
    inputs, outputs : list of path-like
        Files read / written. Relative paths are taken relative to ``run_dir`` unless they
        already point inside it from the working directory. Each is recorded as
        ``{"path": <posix path relative to run_dir>, "sha256": <hex or None if missing>}``.
    outcome : {"success", "error"}
        How the stage ended.
    error : str, optional
        The error message when ``outcome == "error"``.
    duration_s : float, optional
        Wall-clock duration of the stage.
    cpu_s : float, optional
        CPU seconds of the thread that ran the stage: its cost in the driver (what it sent
        to Ray's workers is not counted).

    Returns
    -------
    dict
        The appended entry (with its ``seq``, ``prev_hash`` and ``hash``).

    Raises
    ------
    PipelineError
        If the ledger does not exist or is empty (call :func:`genesis` first), its last
        line is unreadable, or ``params`` is not JSON-serialisable.
    ValueError
        If ``outcome`` is neither ``"success"`` nor ``"error"``.

    Notes
    -----
    Safe under concurrency: reading the last entry, appending and fsync happen under a
    per-ledger threading lock and an exclusive ``flock`` on ``audit.jsonl.lock``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit: outcome must be one of {OUTCOMES}, got {outcome!r}")
    root = _run_dir_of(run_dir)
    ledger = _ledger_path(run_dir)
    no_genesis = PipelineError(
        f"audit: no ledger at {ledger}; start the run with audit.genesis() before recording "
        f"stage {stage!r}"
    )
    if not ledger.is_file():
        raise no_genesis
    payload = {
        "stage": stage,
        "node": _relative(root, node),
        "params": _normalise(params, f"params of stage {stage!r}"),
        "inputs": _hashed(root, inputs, "inputs"),
        "outputs": _hashed(root, outputs, "outputs", stat=True),
        "outcome": outcome,
        "error": error,
        "duration_s": None if duration_s is None else round(float(duration_s), 6),
        "cpu_s": None if cpu_s is None else round(float(cpu_s), 6),
    }
    with _locked(ledger):
        last = _read_last_entry(ledger)
        if last is None:
            raise no_genesis
        entry = _make_entry(last["seq"] + 1, last["hash"], "stage", payload)
        _append_line(ledger, _canonical(entry) + "\n")
    return entry


class stage_audit:  # noqa: N801 - used like a function: ``with stage_audit(...):``
    """Context manager recording one stage in the ledger when the block ends.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory (its ledger must hold a genesis entry).
    stage : str
        Stage name.
    node : path-like or Node
        The node the stage works on.
    params : dict
        JSON-able stage parameters.
    inputs, outputs : list of path-like
        Files read / written. ``inputs``, ``outputs`` and ``params`` may be changed inside
        the block (attributes of the same names); outputs are hashed on exit.

    Notes
    -----
    On a normal exit, records ``outcome="success"`` with the output hashes. When the block
    raises, records ``outcome="error"`` with the exception's one-line message and re-raises
    the exception; if recording itself fails then, the original exception still propagates
    (with a note). ``duration_s`` is the block's wall-clock time, ``cpu_s`` the CPU time
    of the thread that ran it. The recorded entry is
    available as ``.entry``.

    Examples
    --------
    >>> with stage_audit(run, "flatten", ".", {"profile": "hrp"}, ins, outs):  # doctest: +SKIP
    ...     write_flattened(...)
    """

    def __init__(
        self,
        run_dir: Path | str | Node,
        stage: str,
        node: Path | str | Node,
        params: dict[str, Any],
        inputs: list[Any],
        outputs: list[Any],
    ) -> None:
        self.run_dir = run_dir
        self.stage = stage
        self.node = node
        self.params = params
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.entry: dict[str, Any] | None = None
        self._start: float | None = None
        self._cpu_start: float | None = None

    def __enter__(self) -> stage_audit:
        self._start = time.perf_counter()
        self._cpu_start = time.thread_time()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = time.perf_counter() - (self._start or time.perf_counter())
        cpu = time.thread_time() - (self._cpu_start or time.thread_time())
        kwargs = dict(
            stage=self.stage,
            node=self.node,
            params=self.params,
            inputs=self.inputs,
            outputs=self.outputs,
            duration_s=duration,
            cpu_s=cpu,
        )
        if exc is None:
            self.entry = record_stage(self.run_dir, outcome="success", **kwargs)
            return False
        try:
            self.entry = record_stage(
                self.run_dir, outcome="error", error=one_line(exc), **kwargs
            )
        except Exception as audit_exc:  # never mask the stage's own failure
            exc.add_note(f"audit: could not record the failure of stage {self.stage!r}: {audit_exc}")
        return False
