"""What the runner reads from Snakemake's log records: the jobs it schedules, one progress line per finished job, its first error."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


@dataclass
class JobRecord:
    """One scheduled job: rule name, output, input and log files (what a dry run reports)."""

    rule: str
    outputs: tuple[str, ...]
    wildcards: dict = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()


class Progress(logging.Handler):
    """Reads Snakemake's own log records: ``run_info`` (the job count), ``job_info`` (a job starts),
    ``job_finished``, and the errors it reports as text.

    ``jobs`` are the jobs announced (in a valid topological order); with a ``stream``, one line
    per finished job is printed there, ``[7/16] sleeve tech done (4.1 s)``, or ``[7/16] sleeve
    tech reused from run <id> (0.0 s)`` for a job that took its outputs from an earlier run (its
    log says so); the workflow's closing ``all`` job is not counted. ``first_error`` is the first error Snakemake itself
    reports (a failure outside any stage, e.g. a missing output).
    """

    #: A step's label is its rule's name; a ``use rule`` variant is labelled as the step it varies.
    _NAMES = {"meta_optimize_hierarchical": "meta_optimize"}

    def __init__(self, stream: TextIO | None, run_dir: Path) -> None:
        super().__init__(level=logging.INFO)
        self.stream, self.run_dir = stream, os.path.abspath(run_dir)
        self.jobs: list[JobRecord] = []
        self.first_error: str | None = None
        self.total: int | None = None
        self.done = 0
        self.started: dict[str, tuple[str, float]] = {}

    def _label(self, rule: str, wildcards: dict) -> str:
        parts = [self._NAMES.get(rule, rule)]
        node = wildcards.get("node")
        if node:
            rel = os.path.relpath(os.path.abspath(node), self.run_dir)
            if rel != ".":
                parts.append("/".join(p for p in Path(rel).parts if p != "sleeves"))
        if wildcards.get("profile"):
            parts.append(str(wildcards["profile"]))
        return " ".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and self.first_error is None:
            lines = [ln.strip() for ln in record.getMessage().splitlines() if ln.strip()]
            self.first_error = next((ln for ln in lines if not ln.startswith(("Error in rule", "Traceback"))), None)
        event = str(getattr(record, "event", "")).lower().rsplit(".", 1)[-1]
        if event == "run_info" and isinstance(getattr(record, "stats", None), dict):
            self.total = sum(int(v) for k, v in record.stats.items() if k not in ("all", "total"))
        elif event == "job_info":
            files = {k: tuple(sorted(str(f) for f in (getattr(record, k, None) or []))) for k in ("output", "input", "log")}
            rule, wildcards = str(getattr(record, "rule_name", "")), dict(getattr(record, "wildcards", None) or {})
            self.jobs.append(JobRecord(rule, files["output"], wildcards, files["input"], files["log"]))
            if rule != "all":
                self.started[str(getattr(record, "jobid", ""))] = (self._label(rule, wildcards), record.created, files["log"])
        elif event == "job_finished" and (job := self.started.pop(str(getattr(record, "job_id", "")), None)):
            self.done += 1
            if self.stream is not None:
                label, t0, logs = job
                outcome = _reused(logs) or "done"
                self.stream.write(f"[{self.done}/{self.total or '?'}] {label} {outcome} ({record.created - t0:.1f} s)\n")
                self.stream.flush()


#: The adapter's log line for a job whose outputs come from an earlier run (``stages.run_step``).
_REUSED = re.compile(r": reused from run (\S+)$", re.M)


def _reused(logs: tuple[str, ...]) -> str | None:
    """``"reused from run <id>"`` when the job's log says it took its outputs from an earlier run."""
    for log in logs:
        try:
            found = _REUSED.search(Path(log).read_text())
        except OSError:
            continue
        if found:
            return f"reused from run {found.group(1)}"
    return None
