"""The run against its ledger: its first failure and its exit line (damaged artifacts: :mod:`tradingview_scraper.owner`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import audit
from ..errors import PipelineError, StageError

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

