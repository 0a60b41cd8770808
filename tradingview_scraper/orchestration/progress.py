"""What the runner reads from Snakemake's log records: the jobs it schedules, one progress line per finished job, its first error."""

from __future__ import annotations

import logging
import os
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


class JobCollector(logging.Handler):
    """Collects the jobs Snakemake announces (in a valid topological order)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.jobs: list[JobRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(getattr(record, "event", "")).lower().endswith("job_info"):
            files = {k: tuple(sorted(str(f) for f in (getattr(record, k, None) or []))) for k in ("output", "input", "log")}
            wc = dict(getattr(record, "wildcards", None) or {})
            self.jobs.append(JobRecord(str(getattr(record, "rule_name", "")), files["output"], wc, files["input"], files["log"]))


class Progress(logging.Handler):
    """Prints one line per finished job: ``[7/16] sleeve tech done (4.1 s)``.

    Reads Snakemake's own log records: ``run_info`` (the job count), ``job_info`` (a job
    starts) and ``job_finished``. The workflow's closing ``all`` job is not counted.
    """

    #: A step's label is its rule's name; a ``use rule`` variant is labelled as the step it varies.
    _NAMES = {"meta_optimize_hierarchical": "meta_optimize"}

    def __init__(self, stream: TextIO, run_dir: Path) -> None:
        super().__init__(level=logging.INFO)
        self.stream, self.run_dir = stream, os.path.abspath(run_dir)
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
        event = str(getattr(record, "event", "")).lower().rsplit(".", 1)[-1]
        if event == "run_info" and isinstance(getattr(record, "stats", None), dict):
            stats = record.stats
            self.total = sum(int(v) for k, v in stats.items() if k not in ("all", "total"))
        elif event == "job_info":
            rule = str(getattr(record, "rule_name", ""))
            if rule != "all":
                label = self._label(rule, dict(getattr(record, "wildcards", None) or {}))
                self.started[str(getattr(record, "jobid", ""))] = (label, record.created)
        elif event == "job_finished":
            job = self.started.pop(str(getattr(record, "job_id", "")), None)
            if job is not None:
                self.done += 1
                label, t0 = job
                self.stream.write(f"[{self.done}/{self.total or '?'}] {label} done ({record.created - t0:.1f} s)\n")
                self.stream.flush()


class SnakemakeErrors(logging.Handler):
    """The first error Snakemake itself reports as text (a failure outside any stage, e.g. a missing output)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.first is None:
            lines = [ln.strip() for ln in record.getMessage().splitlines() if ln.strip()]
            self.first = next((ln for ln in lines if not ln.startswith(("Error in rule", "Traceback"))), None)
