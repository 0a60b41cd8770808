"""The canonical runner: every entry point drives ``workflow/Snakefile`` through Snakemake's API."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..cluster import interrupted
from ..errors import ConfigError, PipelineError, one_line
from ..history import LATEST, latest
from ..layout import RUNS_ROOT, check_name, check_runs_root, new_run_id, run_dir, wildcard_like
from ..manifest import DEFAULT_MANIFEST, parse_risk_profiles
from ..owner import RunOwner, terminated
from ..rule_inputs import targets
from ..run import RunContext
from ..runlock import check_run_dir
from .progress import JobRecord, Progress

#: The workflow ships inside the package (in a checkout, a link to the top-level workflow/).
SNAKEFILE = Path(__file__).resolve().parents[1] / "workflow" / "Snakefile"


@dataclass
class RunResult:
    """Outcome of :meth:`MetaPipeline.execute`."""

    run_id: str
    run_dir: Path
    jobs: list[JobRecord]
    dry_run: bool


#: What each option of :class:`MetaPipeline` accepts: (types, None allowed, what would be valid).
_OPTIONS: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "meta_profile": ((str,), False, "a profile name of the manifest, e.g. 'meta_demo'"),
    "profiles": ((str, list, tuple), True, "a list of risk profile names or one comma-separated string"),
    "execute_sleeves": ((bool,), False, "True or False"),
    "run_id": ((str,), True, "a run id string, or None for a generated one"),
    "manifest": ((str, os.PathLike), False, "a path to the manifest JSON"),
    "cores": ((int,), False, "a positive integer"),
    "dry_run": ((bool,), False, "True or False"),
    "ray": ((bool,), False, "True or False"),
    "ray_address": ((str,), True, "'host:port' of a Ray cluster, or None"),
    "ray_token_path": ((str, os.PathLike), True, "a path to the cluster's token file, or None"),
    "ray_num_cpus": ((int,), True, "a positive integer, or None"),
    "runs_root": ((str, os.PathLike), False, "a path to the directory of run directories"),
    "forceall": ((bool,), False, "True or False"),
    "quiet": ((bool,), False, "True or False"),
    "previous_run": ((str,), True, "an earlier run id, 'latest' (the newest finished run of the profile), or None"),
    "holdings": ((str, os.PathLike), True, "a path to a holdings file (CSV or JSON), or None"),
    "reuse": ((bool,), False, "True or False"),
}


def check_options(options: object) -> None:
    """Refuse an option of the wrong type (a :class:`MetaPipeline` or anything with its attributes).

    Raises
    ------
    ConfigError
        The first bad option, named with its value and what would be valid.
    """
    for name, (types, optional, valid) in _OPTIONS.items():
        value = getattr(options, name)
        if value is None and optional:
            continue
        ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        if ok and types == (int,):
            ok = value >= 1
        if ok and isinstance(value, (list, tuple)):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"{name}={value!r} must be {valid} (got {type(value).__name__})")
    if options.progress is not None and not callable(getattr(options.progress, "write", None)):
        raise ConfigError(f"progress={options.progress!r} must be a text stream (e.g. sys.stdout) or None")


@dataclass
class MetaPipeline:
    """One run of the canonical meta-portfolio pipeline.

    sleeves (parallel, on Ray) -> meta returns -> meta optimize -> flatten -> report,
    for every risk profile, as the file targets of ``workflow/Snakefile``.

    Parameters
    ----------
    meta_profile : str
        Meta profile of the manifest (an atomic profile runs that one sleeve).
    profiles : list of str or str, optional
        Risk profiles (default: the profile's own list).
    execute_sleeves : bool
        Recompute every sleeve, pinned ones included.
    run_id : str, optional
        Run directory name; generated (time-sortable) when None.
    manifest : path
        The manifest JSON (default ``config/manifest.json``).
    cores : int
        Cores for Snakemake's scheduler.
    dry_run : bool
        Schedule only: report the jobs, run nothing.
    ray : bool
        Dispatch sleeves to Ray (False: sequential, in-process).
    ray_address : str, optional
        An existing Ray cluster; default ``RAY_ADDRESS``, else a private loopback
        cluster per run (started by the workflow's main process, this one).
    ray_token_path : str, optional
        Token file of the cluster at ``ray_address``; default ``RAY_AUTH_TOKEN_PATH``.
    ray_num_cpus : int, optional
        CPUs of the private cluster (default and maximum: this machine's).
    previous_run, holdings : str, optional
        The current book (at most one): an earlier run id (``"latest"``: the newest finished
        run of the same profile in ``runs_root``, resolved once here), or a holdings file (CSV or
        JSON of symbol, direction, weight). Adds ``rebalance_<profile>.json`` per risk
        profile; a previous run also adds the change view to the report.
    reuse : bool
        Take unchanged jobs' outputs from earlier runs in ``runs_root`` (its node store);
        False (implied by ``forceall``) computes every job the run runs.
    """

    meta_profile: str
    profiles: list[str] | str | None = None
    execute_sleeves: bool = False
    run_id: str | None = None
    manifest: str | Path = DEFAULT_MANIFEST
    cores: int = 2
    dry_run: bool = False
    ray: bool = True
    ray_address: str | None = None
    ray_token_path: str | None = None
    ray_num_cpus: int | None = None
    runs_root: str | Path = RUNS_ROOT
    forceall: bool = False
    quiet: bool = True
    previous_run: str | None = None
    holdings: str | Path | None = None
    reuse: bool = True
    #: Where to print one line per finished job (None: nothing; the CLI prints them to stdout).
    progress: TextIO | None = None

    def __post_init__(self) -> None:
        check_options(self)
        self.profiles = parse_risk_profiles(self.profiles)
        if self.run_id is None:
            self.run_id = new_run_id()
        check_name(self.run_id, "run id")
        if self.run_id == LATEST:
            raise ConfigError(f"run id {LATEST!r} is reserved: --previous-run {LATEST} names a run by it; choose another run id")
        check_runs_root(self.runs_root, writable=not self.dry_run, run_id=self.run_id)
        if self.previous_run == LATEST:  # resolved once, here: the workflow and its jobs get the run id
            self.previous_run = latest(self.meta_profile, self.runs_root, exclude=self.run_id)
        check_run_dir(self.run_dir, self.run_id)  # a directory that is not this run's: refused, untouched
        # Configuration errors surface here, as one line, before Snakemake starts. The run is
        # resolved from the same config the workflow gets; its owner checks the pins, data
        # and book once and is handed to the workflow it drives.
        if not self.meta_profile:  # the config's "no profile given" names the plain command's option
            raise ConfigError("profile is empty: pass --profile <name> (e.g. meta_demo)")
        run = RunContext.from_config(self.config())
        pinned = [n.sleeve_id for n in run.plan.atomic_nodes() if n.pin]
        if pinned and wildcard_like(self.run_dir):
            raise ConfigError(
                f"runs_root {self.runs_root}: Snakemake would read part of it as a wildcard, and pinned sleeve "
                f"{pinned[0]!r} is read from there before its directory exists; use a runs root without "
                "'{name}' (or --execute-sleeves)"
            )
        self.owner = RunOwner(run)
        self.owner.preflight()

    @property
    def plan(self):
        """The resolved plan of the run."""
        return self.owner.run.plan

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run_id, self.runs_root)

    def config(self) -> dict:
        """The Snakemake config of this run (scalars only: they travel on command lines)."""
        settings = {
            "profile": self.meta_profile,
            "run_id": self.run_id,
            "manifest": str(self.manifest),
            "profiles": ",".join(self.profiles or []),
            "execute_sleeves": bool(self.execute_sleeves),
            "ray": bool(self.ray),
            "runs_root": str(self.runs_root),
            "ray_num_cpus": self.ray_num_cpus,
            "ray_address": self.ray_address,
            "ray_token_path": self.ray_token_path,
            "previous_run": self.previous_run,
            "holdings": self.holdings,
            "reuse": bool(self.reuse and not self.forceall),  # forcing every job means computing it
        }
        return {k: v if isinstance(v, bool | int) else str(v) for k, v in settings.items() if v not in (None, "")}

    def execute(self) -> RunResult:
        """Run (or dry-run) the workflow; raise PipelineError with the failing job's message.

        A real run holds the run's lock (:mod:`tradingview_scraper.runlock`) throughout, so
        Snakemake's own lock is off; jobs a killed earlier driver left incomplete rerun.

        Raises
        ------
        RunInProgressError
            Another live process runs the same run id (nothing is touched).
        PipelineError
            A job failed; the message is the root cause's one line.
        KeyboardInterrupt
            On Ctrl-C (SIGINT), once the running sleeves' Ray tasks are cancelled and the
            run's private cluster is stopped.
        """
        from snakemake.api import SnakemakeApi
        from snakemake.logging import logger as smk_logger
        from snakemake.settings.types import (
            ConfigSettings,
            DAGSettings,
            ExecutionSettings,
            OutputSettings,
            Quietness,
            ResourceSettings,
        )

        log = Progress(self.progress, self.run_dir)
        gc_thresholds = gc.get_threshold()  # the Snakefile raises them for the DAG build
        # Ray's own SIGTERM handler in the driver dumps a C++ stack and aborts; the owner's stops like Ctrl-C.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        owner = self.owner
        if owner.cluster is not None:
            owner.run.cluster = owner.cluster.renewed()  # an earlier execute shut it down
        cluster = owner.cluster
        try:
            owner.watch_signals()
            # A real run claims its directory (lock, partial writes, damaged artifacts
            # discarded) before Snakemake builds the DAG; a dry run touches nothing.
            if not self.dry_run:
                owner.claim()
            # Sleeve jobs reserve ray_cpus: no more run at once than the cluster can place.
            # A named cluster is joined (and so proven reachable) before any work starts and
            # its jobs reuse this connection; a private one is started by the owner in the
            # workflow's onstart hook, in this process, only if a sleeve is to be computed.
            ray_cpus = None
            if cluster is not None and (cluster.address is None or not self.dry_run):
                ray_cpus = cluster.cpus()
            with (
                owner.handed(),
                SnakemakeApi(OutputSettings(quiet={Quietness.ALL} if self.quiet else None, show_failed_logs=True)) as api,
            ):
                smk_logger.addHandler(log)
                try:
                    workflow = api.workflow(
                        snakefile=SNAKEFILE,
                        workdir=Path.cwd(),
                        resource_settings=ResourceSettings(
                            cores=self.cores, resources={"ray_cpus": ray_cpus} if ray_cpus else {}
                        ),
                        config_settings=ConfigSettings(config=self.config()),
                    )
                    dag = workflow.dag(
                        DAGSettings(
                            targets=frozenset(targets(owner.run, runner=True)),
                            forceall=self.forceall,
                            forcerun=["sleeve"] if self.execute_sleeves else [],
                            force_incomplete=True,
                        )
                    )
                    dag.execute_workflow(
                        executor="local",
                        pseudo_executor="dryrun" if self.dry_run else None,
                        execution_settings=ExecutionSettings(use_threads=True, lock=False),
                    )
                finally:
                    smk_logger.removeHandler(log)
            # Never "done" while an artifact differs from its record (the onsuccess hook gave
            # the verdict already; a no-op rerun has no hooks).
            verdict = None if self.dry_run else owner.finish()
            if verdict is not None:
                raise verdict
        except PipelineError:
            raise
        except Exception as exc:  # Snakemake reports a job's exception only as text: the ledger has it
            if interrupted() or terminated():  # Snakemake turned Ctrl-C into a failed run: report it as Ctrl-C
                raise KeyboardInterrupt from exc
            raise (owner.finish(failed=True) or PipelineError(_root_message(exc, log.first_error))) from exc
        finally:
            gc.unfreeze()  # what the DAG build froze is collectable again
            gc.set_threshold(*gc_thresholds)
            owner.release()  # the cluster stopped (a named one left), the lock released, SIGTERM's handler back
        return RunResult(self.run_id, self.run_dir, log.jobs, self.dry_run)


def _root_message(exc: BaseException, logged: str | None = None) -> str:
    """The most specific one-line message in an exception chain (ours if present), else what Snakemake logged."""
    seen, cur, best = set(), exc, None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, PipelineError):
            best = cur
        best = next((a for a in getattr(cur, "args", ()) or () if isinstance(a, PipelineError)), best)
        cur = cur.__cause__ or cur.__context__
    if best is not None:
        return one_line(str(best))
    if logged and "did not complete successfully" in str(exc):
        return logged
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() != "Error:"]
    return " ".join(lines)[:800] or type(exc).__name__
