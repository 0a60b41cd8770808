"""The run against its ledger: damaged artifacts before the DAG, its first failure, its exit line."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import audit, runlock
from ..errors import PipelineError, RunInProgressError, StageError
from ..layout import Node, refuse_symlink

#: What a run directory may hold before its ledger exists (a run killed before any stage wrote).
_BEFORE_LEDGER = re.compile(r"^(\.run\.lock|audit\.jsonl\.lock|logs/.*|(.*/)?\.[^/]*\.tmp)$")


def discard_damaged(run_dir: Path | str, run_id: str, stream=None) -> list[str]:
    """Before the DAG is built: delete every artifact that no longer has the bytes its ledger recorded.

    What was computed with or from it goes too (see :func:`audit.discard`), so Snakemake
    reruns the job that writes it and everything downstream. Each damaged file is one line
    on ``stream`` (default stderr); the ledger records the discard. Stat first: only files whose
    size, mtime, ctime or inode differ from the record are hashed. Nothing happens while
    another live process holds the run (it is refused when its jobs start), or when the
    run directory does not exist.

    Returns
    -------
    list of str
        The lines printed.

    Raises
    ------
    ConfigError
        The run directory is a symlink.
    PipelineError
        The ledger does not verify, or the directory holds artifacts but no ledger: either
        way nothing in it can be trusted (the message says what to do).
    """
    import sys

    run_dir = refuse_symlink(Path(run_dir), "run directory")
    if not run_dir.is_dir():
        return []
    try:
        taken = runlock.acquire(run_dir, run_id)
    except RunInProgressError:
        return []
    try:
        if not Node(run_dir).file("audit").is_file():
            stray = [
                rel
                for p in sorted(run_dir.rglob("*"))
                if p.is_file() and not _BEFORE_LEDGER.match(rel := p.relative_to(run_dir).as_posix())
            ]
            if stray:
                raise PipelineError(
                    f"{run_dir} holds artifacts ({stray[0]}, ...) but no audit ledger (audit.jsonl): they cannot "
                    "be verified; remove the directory or choose another run id"
                )
            return []
        damages = audit.damaged(run_dir)
        audit.discard(run_dir, damages)
    finally:
        if taken:
            runlock.release(run_dir)
    lines = [f"{d.line(run_dir)}: discarded with what was computed from it; recomputing" for d in damages]
    for line in lines:
        print(line, file=stream or sys.stderr, flush=True)
    return lines


_runner_active = 0


_runner_guard = threading.Lock()


@contextlib.contextmanager
def runner_reports_errors() -> Iterator[None]:
    """While the runner drives the workflow in this process, it prints the run's error line itself."""
    global _runner_active
    with _runner_guard:
        _runner_active += 1
    try:
        yield
    finally:
        with _runner_guard:
            _runner_active -= 1


def report_at_exit(error: BaseException | None) -> None:
    """Print ``error`` as one line when the process exits, i.e. after Snakemake's own closing lines.

    For the plain ``snakemake`` command, whose last line is then the root cause; the runner
    (see :func:`runner_reports_errors`) prints its own.
    """
    import atexit
    import sys

    if error is not None and not _runner_active:
        atexit.register(print, f"error: {error}", file=sys.stderr, flush=True)


def first_failure(run_dir: Path | str, after: int = -1) -> PipelineError | None:
    """The first stage failure the run's ledger recorded after entry ``after``, as the pipeline error it was.

    Stages run as threads, processes or cluster jobs; Snakemake reports their exceptions only
    as text, but every stage records its failure's one line in the ledger.
    """
    from .. import errors

    for entry in audit.failures(run_dir, after):
        name, _, message = str(entry.get("error") or "").partition(": ")
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, PipelineError) and message:
            return cls(message)
        return StageError(f"{entry.get('stage')} {entry.get('node')}: {entry.get('error')}")
    return None

