"""The one owner of a run in the workflow's main process: its directory, lock, cluster, signals and verdict.

The runner (scripts, ``make``, the Python API) creates it, checks the run and claims it before
Snakemake starts, and hands it to the workflow it drives (:meth:`RunOwner.handed`); for the
plain ``snakemake`` command the workflow creates it when the Snakefile is parsed
(:meth:`RunOwner.for_workflow`). Parsing only reads: the run is claimed only when jobs will
really execute.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from . import audit, runlock, stages
from .cluster import watch_interrupts
from .errors import ConfigError, PipelineError
from .layout import check_runs_root, wildcard_like
from .run import RunContext

# SIGTERM, like SIGINT, is process-wide: a plain bool a signal handler may set.
_terminated = False

#: The owner the runner hands to the workflow it drives in this context (see :meth:`RunOwner.handed`).
_handed: contextvars.ContextVar[RunOwner | None] = contextvars.ContextVar("tvs_run_owner", default=None)


def report_at_exit(error: BaseException | None) -> None:
    """Print ``error`` as one line when the process exits, after Snakemake's own closing lines.

    Only with no runner driving the workflow in this context (the plain ``snakemake``
    command, whose last line is then the root cause); a runner prints its own.
    """
    if error is not None and _handed.get() is None:
        atexit.register(print, f"error: {error}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Report a :class:`PipelineError` leaving the block at exit (:func:`report_at_exit`); re-raise it."""
    try:
        yield
    except PipelineError as exc:
        report_at_exit(exc)
        raise


def terminated() -> bool:
    """Whether SIGTERM stopped the last run this process watched (:meth:`RunOwner.watch_signals`)."""
    return _terminated


def _on_sigterm(signum: int, frame) -> None:
    global _terminated
    _terminated = True
    if callable(handler := signal.getsignal(signal.SIGINT)):
        handler(signal.SIGINT, frame)
    raise KeyboardInterrupt


class RunOwner:
    """The one owner of a run: what it may touch, its lock, its cluster, its signals, its verdict.

    Parameters
    ----------
    run : RunContext
        The run (plan, run id, directories, the cluster it starts or joins).
    plain : bool
        The plain ``snakemake`` command's owner (:meth:`for_workflow`): the workflow, not a
        runner, ends the run (its verdict the command's last line, the lock released).
    """

    def __init__(self, run: RunContext, *, plain: bool = False) -> None:
        self.run = run
        self.run_dir, self.run_id = run.run_dir, run.run_id
        self.claimed = False
        self.start_seq = audit.last_seq(self.run_dir)  # failures after it are this run's
        self._preflight_done = False
        self._pass_to_jobs: Callable[[dict], None] = lambda settings: None
        self.plain = plain
        self._produced: list[str] | None = None
        self._outcome: list[PipelineError | None] = []  # the run's verdict, once it finished
        self._watching = False
        self._sigterm: object | None = None  # SIGTERM's handler before the run watched signals

    @property
    def cluster(self):
        """The run's Ray cluster (None: sleeves compute in-process)."""
        return self.run.cluster

    @contextlib.contextmanager
    def handed(self) -> Iterator[RunOwner]:
        """While the block runs, the workflow parsed in this context takes this owner (:meth:`for_workflow`)."""
        token = _handed.set(self)
        try:
            yield self
        finally:
            _handed.reset(token)

    @classmethod
    def for_workflow(cls, config: dict, *, pass_to_jobs: Callable[[dict], None]) -> RunOwner:
        """The owner of the workflow's main process: the one a runner handed over, else a new one.

        The plain ``snakemake`` command resolves the run from ``config`` here, refuses a
        directory that is not the run's and prints a generated run id; nothing is created.
        A generated run id and a named cluster's address travel to the jobs as config
        (``pass_to_jobs``), so a job needs nothing from the environment.

        Raises
        ------
        PipelineError
            The configuration is refused (reported as the plain command's last line too).
        """
        with reported():
            owner = _handed.get()
            if owner is None or str(config.get("run_id")) != owner.run_id:
                run = RunContext.from_config(config)
                check_runs_root(run.runs_root, writable=False)
                if wildcard_like(run.run_dir):  # rule all's paths are formatted: braces have no escape
                    raise ConfigError(
                        f"runs_root {run.runs_root}: Snakemake would read part of it as a wildcard in the targets of "
                        "rule all; run it with scripts/run_meta_pipeline.py, make or the Python API (which name the "
                        "targets literally), or use a runs root without '{name}'"
                    )
                runlock.check_run_dir(run.run_dir, run.run_id)
                owner = cls(run, plain=True)
            owner._pass_to_jobs = pass_to_jobs
            if not config.get("run_id"):
                pass_to_jobs({"run_id": owner.run_id})
                print(f"run id: {owner.run_id}  (run directory {owner.run_dir})")
            if owner.cluster is not None and owner.cluster.address is not None and "ray_address" not in config:
                pass_to_jobs(owner.cluster.job_config())
            return owner

    def ray_cpus(self) -> int:
        """How many sleeve jobs may run at once: the CPUs of the run's cluster (a named cluster is asked)."""
        with reported():
            return self.cluster.cpus()

    def preflight(self) -> None:
        """Check the run's pins, data and rebalance book once (:func:`stages.preflight`)."""
        if not self._preflight_done:
            stages.preflight(self.run)
            self._preflight_done = True

    def claim(self, *, repair: bool = True) -> None:
        """Own the run directory for a run whose jobs will execute (idempotent).

        After the pre-flight checks and the directory's (:func:`runlock.check_run_dir`), takes
        the run's lock and, with ``repair``, deletes every artifact whose bytes differ from its
        ledger record together with what was computed from it, one line each on stderr, so
        that chain reruns. Call it before the DAG is built: Snakemake plans reruns from the
        files it sees then.

        Raises
        ------
        RunInProgressError
            Another live process holds the run's lock.
        ConfigError, DataError
            A pin, a data source or the book is unusable, or the directory is not this run's.
        PipelineError
            The ledger does not verify: nothing in the run can be trusted.
        """
        if self.claimed:
            return
        with reported():
            self.preflight()
            check_runs_root(self.run.runs_root, run_id=self.run_id)
            runlock.check_run_dir(self.run_dir, self.run_id)
            runlock.acquire(self.run_dir, self.run_id)
            self.claimed = True
            try:
                damages = audit.damaged(self.run_dir) if repair else []
                audit.discard(self.run_dir, damages)
            except BaseException:
                self.release()
                raise
        self.start_seq = audit.last_seq(self.run_dir)
        if self.plain:  # a no-op run of the plain command ends without hooks
            atexit.register(self.release)
        for d in damages:
            print(f"{d.line(self.run_dir)}: discarded with what was computed from it; recomputing", file=sys.stderr, flush=True)

    def watch_signals(self) -> None:
        """Ctrl-C (:func:`cluster.watch_interrupts`) and SIGTERM cancel the run's Ray tasks and stop it.

        Snakemake's scheduler answers SIGTERM by waiting for every running job and Ray's C++
        core dumps a stack on it: SIGTERM goes to SIGINT's handler instead. Called before the
        claim and again once the scheduler has set its own SIGTERM handler (``onstart``);
        :meth:`release` puts back the handler the first call replaced.
        """
        global _terminated
        if not self._watching:
            _terminated = False
        watch_interrupts()
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            if not self._watching:
                self._sigterm = previous
        self._watching = True

    def start(self, sleeves_to_compute: bool, produced: list[str] | None = None, *, jobs_in_process: bool = False) -> None:
        """The run's jobs are about to execute (the workflow's ``onstart``): watch signals, claim, start the cluster.

        Explicit targets skip the final targets' input function, so a run is claimed here at
        the latest; damaged artifacts are then left to the final check. A private cluster
        starts only after the checks and the lock: with ``jobs_in_process`` (jobs are threads
        of this process) when the first task needs it, else here when a sleeve will be
        computed (``sleeves_to_compute``), since jobs in other processes need its address.
        ``produced``: every output of the run's complete DAG (None: a partial DAG), so that
        :meth:`finish` retires what the run no longer produces.
        """
        self.watch_signals()
        self.claim(repair=False)
        self._produced = produced
        if self.cluster is None or self.cluster.address is not None:
            return
        with reported():
            if jobs_in_process:
                self.cluster.start_on_demand()
            elif sleeves_to_compute:
                self.cluster.start()
                self._pass_to_jobs(self.cluster.job_config())

    def finish(self, failed: bool = False) -> PipelineError | None:
        """End the run once: stop (or leave) its cluster and give its verdict.

        On failure the verdict is the root cause's one line, from the ledger; on success, the
        first recorded artifact that no longer matches its record. A successful run retires
        the recorded artifacts no job of it produces any more: an earlier invocation of the
        same run id may have written files this one does not (``rebalance_<p>.json`` once the
        book is dropped), and left in place they would read as current. The plain command
        prints the verdict as its last line and releases the run here.

        Returns
        -------
        PipelineError or None
            The run's error, the same on every call.
        """
        if self._outcome:
            return self._outcome[0]
        try:
            if self.cluster is not None:
                self.cluster.shutdown()
            if failed:
                error = audit.first_failure(self.run_dir, self.start_seq)
            else:
                left = audit.damaged(self.run_dir) if self.claimed else []
                error = PipelineError(f"{left[0].line(self.run_dir)}; rerun the same command to recompute it") if left else None
                if error is None and self._produced is not None:
                    self._retire(self._produced)
            self._outcome.append(error)
            if self.plain:
                report_at_exit(error)
            return error
        finally:
            if self.plain:
                self.release()

    def _retire(self, produced: list[str]) -> None:
        """Retire the recorded artifacts outside ``produced`` (output files, or directories whose files count)."""
        root = Path(os.path.abspath(self.run_dir))
        outputs = {os.path.abspath(p) for p in produced}
        stale = [
            rel
            for rel in audit.recorded(self.run_dir)
            if not any(str(p) in outputs for p in (root / rel, *(root / rel).parents[: len(Path(rel).parts) - 1]))
        ]
        audit.retire(self.run_dir, stale, "no longer produced by this run")

    def release(self) -> None:
        """Stop the cluster, release the lock :meth:`claim` took and put back SIGTERM's handler; idempotent."""
        if self.cluster is not None:
            self.cluster.shutdown()
        if self.claimed:
            self.claimed = False
            runlock.release(self.run_dir)
        if self._sigterm is not None:
            with contextlib.suppress(ValueError):  # off the main thread: the handler stays
                signal.signal(signal.SIGTERM, self._sigterm)
        self._watching, self._sigterm = False, None
        self._outcome.clear()  # a next run of this owner (the runner's execute again) has its own
