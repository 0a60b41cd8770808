"""The canonical runner: every entry point drives ``workflow/Snakefile`` through Snakemake's API."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import runlock
from ..errors import ConfigError, PipelineError
from ..layout import RUNS_ROOT, check_name, new_run_id, node_at, run_dir
from ..manifest import DEFAULT_MANIFEST, load_plan, parse_risk_profiles
from ..stages import check_data, check_pins
from .compute import backend_from_config, interrupted, shutdown_all, watch_interrupts

#: The workflow ships inside the package (in a checkout, a link to the top-level workflow/).
SNAKEFILE = Path(__file__).resolve().parents[1] / "workflow" / "Snakefile"


@dataclass
class JobRecord:
    """One scheduled job: rule name and output files (what a dry run reports)."""

    rule: str
    outputs: tuple[str, ...]
    wildcards: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """Outcome of :meth:`MetaPipeline.execute`."""

    run_id: str
    run_dir: Path
    jobs: list[JobRecord]
    dry_run: bool


class _JobCollector(logging.Handler):
    """Collects the jobs Snakemake announces (in a valid topological order)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.jobs: list[JobRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(getattr(record, "event", "")).lower().endswith("job_info"):
            outs = tuple(sorted(str(o) for o in (getattr(record, "output", None) or [])))
            wc = dict(getattr(record, "wildcards", None) or {})
            self.jobs.append(JobRecord(str(getattr(record, "rule_name", "")), outs, wc))


class _FirstStageError(logging.Handler):
    """Keeps the first error a stage raised (stages log it with ``extra={"error": exc}``).

    Snakemake reports a failed job's exception only as text; this is the exception itself.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.error: PipelineError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        err = getattr(record, "error", None)
        if self.error is None and isinstance(err, PipelineError):
            self.error = err


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
        cluster per run.
    ray_num_cpus : int, optional
        CPUs of the private cluster (default and maximum: this machine's).
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
    ray_num_cpus: int | None = None
    runs_root: str | Path = RUNS_ROOT
    forceall: bool = False
    quiet: bool = True

    def __post_init__(self) -> None:
        self.profiles = parse_risk_profiles(self.profiles)
        if self.run_id is None:
            self.run_id = new_run_id()
        check_name(self.run_id, "run id")
        if not isinstance(self.cores, int) or self.cores < 1:
            raise ConfigError(f"cores={self.cores!r} must be a positive integer")
        # Configuration errors surface here, as one line, before Snakemake starts.
        self.plan = load_plan(self.meta_profile, self.manifest, self.profiles)
        if not self.execute_sleeves:  # --execute-sleeves recomputes pinned sleeves instead
            check_pins(self.plan, self.runs_root, self.run_id)
        check_data(self.plan, Path.cwd(), include_pinned=self.execute_sleeves)
        backend_from_config(self.ray, self.ray_address, self.ray_num_cpus)  # checks the Ray settings; starts nothing

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run_id, self.runs_root)

    def _missing_sleeves(self) -> bool:
        """Whether a sleeve this run computes has no returns yet (so its job will surely run)."""
        return any(
            not node_at(self.run_dir, spec.path).file("returns").is_file()
            for spec in self.plan.atomic_nodes()
            if self.execute_sleeves or not spec.pin
        )

    def config(self) -> dict:
        """The Snakemake config of this run (scalars only: they travel on command lines)."""
        cfg = {
            "profile": self.meta_profile,
            "run_id": self.run_id,
            "manifest": str(self.manifest),
            "profiles": ",".join(self.plan.risk_profiles),
            "execute_sleeves": bool(self.execute_sleeves),
            "ray": bool(self.ray),
            "runs_root": str(self.runs_root),
        }
        if self.ray_address:
            cfg["ray_address"] = self.ray_address
        if self.ray_num_cpus:
            cfg["ray_num_cpus"] = int(self.ray_num_cpus)
        return cfg

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

        collector, failed = _JobCollector(), _FirstStageError()
        gc_thresholds = gc.get_threshold()  # the Snakefile raises them for the DAG build
        forcerun = ["sleeve"] if self.execute_sleeves else []
        locked = not self.dry_run and runlock.acquire(self.run_dir, self.run_id)
        stage_log = logging.getLogger("tradingview_scraper")
        stage_log.addHandler(failed)
        watch_interrupts()
        try:
            # Sleeve jobs reserve ray_cpus: no more run at once than the cluster can place.
            # An external cluster is asked (and so proven reachable) before any work starts.
            backend = backend_from_config(self.ray, self.ray_address, self.ray_num_cpus)
            ray_cpus = backend.capacity(connect=not self.dry_run) if backend is not None else None
            if backend is not None and not self.dry_run and self._missing_sleeves():
                backend.start_in_background()  # boots while Snakemake parses and builds the DAG
            with SnakemakeApi(OutputSettings(quiet={Quietness.ALL} if self.quiet else None, show_failed_logs=True)) as api:
                smk_logger.addHandler(collector)
                try:
                    workflow = api.workflow(
                        snakefile=SNAKEFILE,
                        workdir=Path.cwd(),
                        resource_settings=ResourceSettings(
                            cores=self.cores, resources={"ray_cpus": ray_cpus} if ray_cpus else {}
                        ),
                        config_settings=ConfigSettings(config=self.config()),
                    )
                    dag = workflow.dag(DAGSettings(forceall=self.forceall, forcerun=forcerun, force_incomplete=True))
                    dag.execute_workflow(
                        executor="local",
                        pseudo_executor="dryrun" if self.dry_run else None,
                        execution_settings=ExecutionSettings(use_threads=True, lock=False),
                    )
                finally:
                    smk_logger.removeHandler(collector)
        except PipelineError:
            raise
        except Exception as exc:  # Snakemake wraps job failures; surface the root cause
            if interrupted():  # Snakemake turned Ctrl-C into a failed run: report it as Ctrl-C
                raise KeyboardInterrupt from exc
            if failed.error is not None:
                raise type(failed.error)(str(failed.error).strip().splitlines()[0]) from exc
            raise PipelineError(_root_message(exc)) from exc
        finally:
            gc.set_threshold(*gc_thresholds)
            stage_log.removeHandler(failed)
            shutdown_all()
            if locked:
                runlock.release(self.run_dir)
        return RunResult(self.run_id, self.run_dir, collector.jobs, self.dry_run)


def _root_message(exc: BaseException) -> str:
    """The most specific one-line message in an exception chain (ours if present)."""
    seen, cur, best = set(), exc, None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, PipelineError):
            best = cur
        best = next((a for a in getattr(cur, "args", ()) or () if isinstance(a, PipelineError)), best)
        cur = cur.__cause__ or cur.__context__
    if best is not None:
        return str(best).strip().splitlines()[0]
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() != "Error:"]
    return " ".join(lines)[:800] or type(exc).__name__
