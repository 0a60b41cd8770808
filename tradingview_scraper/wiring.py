"""What the workflow's rules are wired with: node patterns, input functions, the run's lifecycle.

``workflow/rules/common.smk`` builds one :class:`Wiring` per process and only forwards to
it, so everything here is plain Python, tested without Snakemake (this module never
imports it). The input functions take the ``{node}`` directory (and profile) a job's
wildcards name and return path strings, as Snakemake expects.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
from collections.abc import Callable

from . import audit, deps, stages, steps
from .cluster import watch_interrupts
from .engines import HIERARCHICAL
from .errors import PipelineError
from .layout import (
    check_runs_root,
    wildcard_like,
)
from .owner import RunOwner, owner_of
from .rule_inputs import (
    NOTHING,
    alternation,
    atomic_below,
    check_plain_runs_root,
    computed_sleeve_pattern,
    declared,
    final_targets,
    literal_files,
    pin_inputs,
    risk_prices,
    step_inputs,
    tune_gc_for_dag,  # noqa: F401 (common.smk imports it from here)
)
from .run import RunContext


class Wiring:
    """The run's plan as the rules need it, and the main process's start and finish.

    Parameters
    ----------
    run : RunContext
        The run (plan, run id, directories, cluster).
    pass_to_jobs : callable
        Gives ``{key: value}`` settings to this run's spawned jobs (Snakemake's config).
    main_process : bool
        Whether this process owns the run (not a job re-parsing the workflow).
    """

    def __init__(self, run: RunContext, *, pass_to_jobs: Callable[[dict], None], main_process: bool) -> None:
        self.run, self.plan = run, run.plan
        self.profiles = self.plan.risk_profiles
        self.cluster = run.cluster
        self._pass_to_jobs = pass_to_jobs
        self.nodes = {path: run.node(path) for path in self.plan.nodes}
        self._paths = {str(node.dir): path for path, node in self.nodes.items()}
        meta = [self.nodes[n.path].dir for n in self.plan.meta_nodes()]
        pinned = [self.nodes[n.path].dir for n in self.plan.atomic_nodes() if n.pin]
        self.meta_nodes = alternation(meta)
        self.root_node = alternation([run.run_dir])
        self.pinned_nodes = alternation(pinned)
        self.sleeve_nodes = (
            computed_sleeve_pattern(run.run_dir, meta + pinned) if self.plan.root.is_meta else alternation([run.run_dir])
        )
        self.hierarchical_profiles = "|".join(p for p in self.profiles if p in HIERARCHICAL) or NOTHING
        self.flat_profiles = "|".join(p for p in self.profiles if p not in HIERARCHICAL) or NOTHING
        # The resolved plan's identity: the params of rule resolved_manifest (cheaper to
        # serialize than the plan itself, which is derived from these).
        self.plan_source = json.dumps(
            {
                "profile": self.plan.profile,
                "risk_profiles": self.profiles,
                "manifest": self.plan.manifest_path,
                "manifest_sha256": self.plan.manifest_sha256,
                "execute_sleeves": run.execute_sleeves,
            },
            sort_keys=True,
        )
        self.main_process = main_process
        self.owner: RunOwner | None = None
        self._owns = False  # this wiring made the owner (the plain command), so it releases it
        self._produced: list[str] | None = None
        if main_process:
            check_runs_root(run.runs_root, writable=False)
            check_plain_runs_root(run)
            # Parsing only looks: a directory that is not this run's is refused, nothing is touched.
            self.owner, self._owns = owner_of(run.run_dir, run.run_id)
            self.owner.check()
        self.start_seq = audit.last_seq(run.run_dir)  # failures after it are this run's
        # Sleeves of one atomic profile share their params and price files: computed once.
        self._sleeve_params = functools.cache(self._sleeve_params_of)
        self._price_files = functools.cache(self._price_files_of)
        self._sleeve_content = functools.cache(self._sleeve_content_of)
        self._pin_source = functools.cache(self._pin_source_of)  # the input function and the params resolve it once
        self._file_digest = functools.cache(self._file_digest_of)
        self._known: dict | None = None

    def own_run(self, config: dict) -> None:
        """The main process's part at parse time: what its jobs must be told.

        A generated run id and a cluster named by ``RAY_ADDRESS`` travel to the jobs as
        config, so a job needs nothing from the environment.
        """
        if not config.get("run_id"):
            self._pass_to_jobs({"run_id": self.run.run_id})
            print(f"run id: {self.run.run_id}  (run directory {self.run.run_dir})")
        if self.cluster is not None and self.cluster.address is not None and "ray_address" not in config:
            self._pass_to_jobs(self.cluster.job_config())

    def ray_cpus(self) -> int | None:
        """How many sleeve jobs may run at once: the cluster's CPUs (a named cluster is asked)."""
        if self.cluster is None:
            return None
        try:
            return self.cluster.cpus()
        except PipelineError as exc:
            stages.report_at_exit(exc)
            raise

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> Wiring:
        """Build from the workflow's config; a refusal is the plain command's last line too."""
        try:
            return cls(RunContext.from_config(config), **kwargs)
        except PipelineError as exc:
            stages.report_at_exit(exc)
            raise

    def claim(self, executing: bool, *, repair: bool = True) -> None:
        """Before the DAG's files are looked at: check the run and claim its directory, only if jobs will execute.

        Called from the final targets' input function, which Snakemake evaluates first while
        it builds the DAG, when it knows whether this is a dry run (Snakemake reports the
        executor only then, not at parse time). A dry run, ``--lint``, ``--report`` or a DAG
        listing touches nothing. The runner claims before Snakemake starts, so this finds
        its claim. With ``repair`` (before the DAG is built), damaged artifacts are
        discarded so that their chain reruns.

        Raises
        ------
        PipelineError
            A pin, a data source or the rebalance book is unusable, another live process
            runs the same run id, or the directory is not this run's.
        """
        if not (executing and self.main_process) or self.owner is None or self.owner.claimed:
            return
        run = self.run
        try:
            if not run.checked:  # the runner checked before Snakemake started
                stages.preflight(
                    self.plan,
                    base_dir=run.base_dir,
                    runs_root=run.runs_root,
                    run_id=run.run_id,
                    execute_sleeves=run.execute_sleeves,
                    previous_run=run.previous_run,
                    holdings=run.holdings,
                )
            check_runs_root(run.runs_root, run_id=run.run_id)  # jobs will run: the run directory must be writable
            self.owner.claim(repair=repair)
        except PipelineError as exc:
            stages.report_at_exit(exc)
            raise
        if self._owns:  # the plain command: a no-op run ends without hooks, the process exit releases
            atexit.register(self.owner.release)
        self.start_seq = self.owner.start_seq

    # ----------------------------------------------------------------- input functions

    def node_path(self, node_dir: str) -> str:
        """Plan path (``"."`` or ``"sleeves/a/..."``) of a ``{node}`` directory."""
        return self._paths.get(node_dir) or self.run.path_of(node_dir)

    def spec(self, node_dir: str):
        return self.plan.nodes[self.node_path(node_dir)]

    def _sleeve_params_of(self, profile: str, pin: str | None) -> str:
        # Sleeves of one atomic profile share one resolved config: serialized once. A skfolio
        # dataset ships inside skfolio, so its version pins the prices.
        spec = next(n for n in self.plan.atomic_nodes() if (n.profile, n.pin) == (profile, pin))
        dataset = deps.dataset_pin(spec.config["data"])
        return json.dumps(
            {"config": spec.config, "profiles": self.profiles, "pin": pin, "dataset": dataset}, sort_keys=True
        )

    def param(self, name: str, key: str, node_dir: str, profile: str | None = None) -> str:
        """Param ``key`` of rule ``name`` for the job at ``node_dir`` (and ``profile``), from its step's entry (:mod:`steps`)."""
        return getattr(self, steps.step(name).params[key])(node_dir, profile)

    def plan_params(self, node_dir: str, profile: str | None = None) -> str:
        return self.plan_source

    def sleeve_params(self, node_dir: str, profile: str | None = None) -> str:
        spec = self.spec(node_dir)
        return self._sleeve_params(spec.profile, spec.pin)

    def _price_files_of(self, profile: str) -> list[str]:
        spec = next(n for n in self.plan.atomic_nodes() if n.profile == profile)
        files = deps.price_files(spec.config["data"], spec.config["universe"].get("symbols"), self.run.base_dir)
        return [str(f) for f in files]

    def inputs(self, name: str, node_dir: str, profile: str | None = None) -> dict[str, str | list[str]]:
        """Rule ``name``'s named inputs for the job at ``node_dir`` (and ``profile``), from its step's entry
        (:mod:`steps`): the run's own files spelled through ``{node}`` (:func:`literal_files`), and
        the files from outside the run as ``self.<source>`` declares them."""
        files = literal_files(step_inputs(self.run, name, self.node_path(node_dir), profile), node_dir)
        for key, spec in steps.step(name).inputs.items():
            if isinstance(spec, steps.Outside):
                found = getattr(self, spec.source)(node_dir, profile)
                files.update(found if isinstance(found, dict) else {key: found})
        return files

    def sleeve_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The price files a computed sleeve reads (table and TradingView sources; none for skfolio),
        as its rule declares them (:func:`declared`)."""
        return declared(self._price_files(self.spec(node_dir).profile))

    # -------------------------------------------------------- content of external files
    # A rule's params carry the digest of the files it reads from outside the run, so new
    # bytes rerun it whatever their mtime. The ledger's record of each file's stat key and
    # sha256 (read, never written, here) spares hashing a file whose stat is unchanged.

    def _file_digest_of(self, path: str) -> str | None:
        if self._known is None:
            self._known = audit.recorded_inputs(self.run.run_dir)
        return deps.file_digest(path, self._known)

    def content(self, paths) -> str:
        """The content digest of ``paths`` (see :func:`deps.content_digest`), each file hashed at most once per process."""
        return deps.content_digest(paths, digest_of=self._file_digest)

    def _sleeve_content_of(self, profile: str) -> str:
        spec = next(n for n in self.plan.atomic_nodes() if n.profile == profile)
        return self.content(self._price_files(spec.profile))

    def sleeve_content(self, node_dir: str, profile: str | None = None) -> str:
        """The digest of a computed sleeve's price files (:meth:`sleeve_prices`)."""
        return self._sleeve_content(self.spec(node_dir).profile)

    def pin_content(self, node_dir: str, profile: str | None = None) -> str:
        """The digest of the pinned run's files a pinned sleeve copies (:meth:`pin_source`)."""
        try:
            files = self._pin_source(self.node_path(node_dir))
        except PipelineError as exc:
            stages.report_at_exit(exc)
            raise
        return self.content(f for v in files.values() for f in ([v] if isinstance(v, str) else v))

    def risk_content(self, node_dir: str, profile: str | None = None) -> str:
        """What the risk job of a meta node reads from outside the run: the data blocks of the
        atomic sleeves below it and their price files' digest."""
        path = self.node_path(node_dir)
        data = sorted({json.dumps([s.config["data"], s.config["universe"].get("symbols")], sort_keys=True) for s in atomic_below(self.run, path)})
        return json.dumps({"data": data, "files": self.content(risk_prices(self.run, path))}, sort_keys=True)

    def rebalance_content(self, node_dir: str, profile: str) -> str:
        """The digest of the current book (the holdings file or the previous run's flattened file),
        and of the price files it is valued at when it is (:func:`stages.needs_prices`)."""
        book = self.content([stages.rebalance_source(self.run, profile)]
                            + ([stages.drift_source(self.run)] if self.run.previous_run else []))  # fmt: skip
        if not stages.needs_prices(self.run):
            return book
        return json.dumps({"book": book, "prices": self.risk_content(node_dir, profile)}, sort_keys=True)

    def sleeve_cpus(self, node_dir: str) -> int:
        return math.ceil(self.spec(node_dir).config["backtest"].get("num_cpus", 1))

    def pin_source(self, node_dir: str, profile: str | None = None) -> dict[str, str | list[str]]:
        """The pinned run's files a pinned sleeve copies, spelled for Snakemake (:func:`literal_files`)."""
        try:
            return literal_files(self._pin_source(self.node_path(node_dir)), node_dir)
        except PipelineError as exc:
            stages.report_at_exit(exc)
            raise

    def _pin_source_of(self, node_path: str) -> dict[str, str | list[str]]:
        return pin_inputs(self.run, node_path)

    def meta_params(self, node_dir: str, profile: str | None = None) -> str:
        spec = self.spec(node_dir)
        params = {k: spec.config[k] for k in ("meta_allocation", "backtest", "health")}
        # Risk profiles defined as estimators (issue 22): their definitions rerun the node's meta
        # jobs when edited. Absent for built-in profiles, so those params keep their bytes.
        if "estimators" in spec.config:
            params["estimators"] = spec.config["estimators"]
        return json.dumps(params, sort_keys=True)

    def risk_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The price files a risk job reads from outside the run, as :func:`declared` keeps them
        (their content is in the params)."""
        return declared(risk_prices(self.run, self.node_path(node_dir)))

    def rebalance_book(self, node_dir: str, profile: str) -> str | list[str]:
        """The current book's file as the rebalance rule declares it (:func:`declared`), or none."""
        book = declared([stages.rebalance_source(self.run, profile)])
        return book[0] if book else []

    def rebalance_since(self, node_dir: str, profile: str | None = None) -> str | list[str]:
        """The previous run's ``returns.parquet`` (its last date: where its book drifts from), or none."""
        since = declared([stages.drift_source(self.run)]) if self.run.previous_run else []
        return since[0] if since else []

    def rebalance_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The price files a rebalance values its book at (those of every atomic sleeve), or none."""
        return declared(risk_prices(self.run, self.node_path(node_dir))) if stages.needs_prices(self.run) else []

    def rebalance_params(self, node_dir: str, profile: str | None = None) -> str:
        book = {"previous_run": self.run.previous_run, "holdings": self.run.holdings}
        trading = {"trading": self.plan.trading} if self.plan.trading else {}  # issue 24
        return json.dumps({**book, **self.plan.root.config["frictions"], **trading}, sort_keys=True)

    def final_targets(self) -> list[str]:
        """The files of rule ``all``: every final artifact of the run, or none where the runner
        names them as Snakemake's targets itself (a run directory with a wildcard-like part,
        see :func:`check_plain_runs_root`)."""
        if wildcard_like(self.run.run_dir):
            return []
        return [str(t) for t in final_targets(self.run)]

    # ----------------------------------------------------------------- lifecycle

    def start(self, sleeves_to_compute: bool, produced: list[str] | None = None) -> None:
        """The run's jobs are about to execute: make sure it is claimed, then start a private Ray cluster.

        Runs in onstart: only when jobs will run (not on dry runs, lint or no-op reruns), so
        parsing stays free of pandas and Ray. A private cluster starts only when a sleeve
        will be computed, after the checks and the lock (a refused run starts none).
        ``produced``: every output of the run's complete DAG (None: a partial DAG, explicit
        targets), so that :meth:`finish` retires what the run no longer produces.

        Raises
        ------
        RunInProgressError
            Another live process runs the same run id.
        PipelineError
            A pin, a data source or the rebalance book is unusable.
        """
        watch_interrupts()  # Ctrl-C cancels running sleeve tasks (not installed for -n or --lint)
        # Explicit targets skip the final targets' input function: claimed here, after the DAG
        # was built, so damaged artifacts are left to the final check rather than discarded.
        self.claim(True, repair=False)
        self._produced = produced
        if self.cluster is not None and self.cluster.address is None and sleeves_to_compute:
            self.cluster.start()
            self._pass_to_jobs(self.cluster.job_config())

    def finish(self, failed: bool = False) -> None:
        """Stop (or leave) the run's Ray cluster, give the run's verdict, release a claim this wiring made.

        On failure, the root cause's one line (from the ledger) is the last line the command
        prints; on success, every recorded artifact must still match, and the artifacts no job
        of the run produces any more are retired (:meth:`RunOwner.retire`).

        Raises
        ------
        PipelineError
            The run succeeded but an artifact no longer matches its audit record.
        """
        if self.cluster is not None:
            self.cluster.shutdown()
        owner = self.owner
        try:
            error = stages.first_failure(self.run.run_dir, self.start_seq) if failed else None
            if not failed and owner is not None:
                error = owner.verdict()
                if error is None and self._produced is not None and owner.claimed:
                    owner.retire(self._produced)
            stages.report_at_exit(error)
            if error is not None and not failed:
                raise error
        finally:
            if owner is not None and self._owns:
                owner.release()
