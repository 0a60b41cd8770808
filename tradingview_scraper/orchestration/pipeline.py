"""The canonical runner: every entry point drives ``workflow/Snakefile`` through Snakemake's API."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TextIO, get_args, get_origin, get_type_hints

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
    """Outcome of :meth:`MetaPipeline.execute`: the run and the jobs it scheduled (in a valid topological order)."""

    run_id: str
    run_dir: Path
    jobs: list[JobRecord]


#: What an option's annotated type accepts, in the order a message names them.
_ACCEPTS: dict[object, tuple[str, Callable[[object], bool]]] = {
    bool: ("True or False", lambda v: isinstance(v, bool)),
    int: ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    Path: ("a path", lambda v: isinstance(v, (str, os.PathLike))),
    list: ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    str: ("a string", lambda v: isinstance(v, str)),
    TextIO: ("a text stream (e.g. sys.stdout)", lambda v: callable(getattr(v, "write", None))),
}


def check_options(options: MetaPipeline) -> None:
    """Refuse an option of the wrong type, as the annotations of :class:`MetaPipeline`'s fields give it.

    Raises
    ------
    ConfigError
        The first bad option, named with its value and what would be valid.
    """
    hints = get_type_hints(MetaPipeline)
    for f in fields(MetaPipeline):
        value, hint = getattr(options, f.name), hints[f.name]
        kinds = [get_origin(t) or t for t in get_args(hint) or (hint,)]  # list[str] counts as list
        if value is None and type(None) in kinds:
            continue
        # A path accepts a string too: the message names the path alone.
        accepted = [kind for kind in _ACCEPTS if kind in kinds and not (kind is str and Path in kinds)]
        if not any(_ACCEPTS[kind][1](value) for kind in accepted):
            valid = " or ".join(_ACCEPTS[kind][0] for kind in accepted) + (" or None" if type(None) in kinds else "")
            raise ConfigError(f"{f.name}={value!r} must be {valid} (got {type(value).__name__})")


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
    ray_token_path: str | Path | None = None
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

        The owner watches signals and, for a real run, claims the run directory (lock, partial
        writes, damaged artifacts discarded) before Snakemake builds the DAG, so Snakemake's
        own lock is off; the whole call is the hand-off of the owner to the workflow.

        Raises
        ------
        RunInProgressError
            Another live process runs the same run id (nothing is touched).
        PipelineError
            A job failed; the message is the root cause's one line.
        KeyboardInterrupt
            On Ctrl-C (SIGINT) or SIGTERM, once the running sleeves' Ray tasks are cancelled
            and the run's private cluster is stopped.
        """
        from snakemake.api import SnakemakeApi
        from snakemake.logging import logger as smk_logger
        from snakemake.settings import types as smk

        log = Progress(self.progress, self.run_dir)
        gc_thresholds = gc.get_threshold()  # the Snakefile raises them for the DAG build
        # Ray's own SIGTERM handler in the driver dumps a C++ stack and aborts; the owner's stops like Ctrl-C.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        owner = self.owner
        if owner.cluster is not None:
            owner.run.cluster = owner.cluster.renewed()  # an earlier execute shut it down
        try:
            with owner.handed():
                owner.watch_signals()
                if not self.dry_run:
                    owner.claim()
                # The workflow's parse sizes ray_cpus from the owner's cluster (a named one is joined
                # there, before any job, and its jobs reuse the connection); the owner starts a
                # private one in the onstart hook, in this process, only if a sleeve is to be computed.
                quiet = {smk.Quietness.ALL} if self.quiet else None
                with SnakemakeApi(smk.OutputSettings(quiet=quiet, show_failed_logs=True)) as api:
                    smk_logger.addHandler(log)
                    try:
                        workflow = api.workflow(
                            snakefile=SNAKEFILE,
                            workdir=Path.cwd(),
                            resource_settings=smk.ResourceSettings(cores=self.cores),
                            config_settings=smk.ConfigSettings(config=self.config()),
                        )
                        dag = workflow.dag(
                            smk.DAGSettings(
                                targets=frozenset(targets(owner.run, runner=True)),
                                forceall=self.forceall,
                                forcerun=["sleeve"] if self.execute_sleeves else [],
                                force_incomplete=True,
                            )
                        )
                        dag.execute_workflow(
                            executor="local",
                            pseudo_executor="dryrun" if self.dry_run else None,
                            execution_settings=smk.ExecutionSettings(use_threads=True, lock=False),
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
        return RunResult(self.run_id, self.run_dir, log.jobs)


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
