"""The run against its ledger: its first failure, and its exit line (the run's owner: :mod:`tradingview_scraper.owner`)."""

from __future__ import annotations

from pathlib import Path

from .. import audit
from ..errors import PipelineError, StageError


def report_at_exit(error: BaseException | None) -> None:
    """Print ``error`` as the plain command's last line at exit (see :func:`tradingview_scraper.owner.report_at_exit`)."""
    from ..owner import report_at_exit as report

    report(error)


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

