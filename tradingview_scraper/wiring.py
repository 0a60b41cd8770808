"""What the workflow's rules are wired with: node patterns and input functions (the run's lifecycle: :mod:`owner`).

``workflow/rules/common.smk`` builds one :class:`Wiring` per process (of the run's owner's
run, or of the config in a job process) and only forwards to it, so everything here is plain
Python, tested without Snakemake (this module never imports it). The input functions take the ``{node}`` directory (and profile) a job's
wildcards name and return path strings, as Snakemake expects.
"""

from __future__ import annotations

import functools
import json
import math

from . import audit, deps, stages, steps
from .engines import HIERARCHICAL
from .errors import PipelineError
from .layout import wildcard_like
from .rule_inputs import (
    NOTHING,
    alternation,
    atomic_below,
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
    """The run's plan as the rules need it.

    Parameters
    ----------
    run : RunContext
        The run (plan, run id, directories, cluster).
    """

    def __init__(self, run: RunContext) -> None:
        self.run, self.plan = run, run.plan
        self.profiles = self.plan.risk_profiles
        self.nodes = {path: run.node(path) for path in self.plan.nodes}
        self._paths = {str(node.dir): path for path, node in self.nodes.items()}
        meta = [self.nodes[n.path].dir for n in self.plan.meta_nodes()]
        pinned = [self.nodes[n.path].dir for n in self.plan.atomic_nodes() if n.pin]
        external = [self.nodes[n.path].dir for n in self.plan.external_nodes()]
        self.external_nodes = alternation(external)
        self.meta_nodes = alternation(meta)
        self.root_node = alternation([run.run_dir])
        self.pinned_nodes = alternation(pinned)
        self.sleeve_nodes = (
            computed_sleeve_pattern(run.run_dir, meta + pinned + external) if self.plan.root.is_meta else alternation([run.run_dir])
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
        # Sleeves of one atomic profile share their params and price files: computed once.
        self._sleeve_params = functools.cache(self._sleeve_params_of)
        self._price_files = functools.cache(self._price_files_of)
        self._sleeve_content = functools.cache(self._sleeve_content_of)
        self._pin_source = functools.cache(self._pin_source_of)  # the input function and the params resolve it once
        self._file_digest = functools.cache(self._file_digest_of)
        self._known: dict | None = None

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
        data = sorted({json.dumps([s.config["data"], s.config["universe"].get("symbols")], sort_keys=True) for s in atomic_below(self.run, path) if s.kind == "atomic"})
        return json.dumps({"data": data, "files": self.content(risk_prices(self.run, path))}, sort_keys=True)

    def rebalance_content(self, node_dir: str, profile: str) -> str:
        """The digest of the current book (the holdings file or the previous run's flattened file),
        and of the price files it is valued at when it is (:func:`stages.needs_prices`)."""
        book = self.content([stages.rebalance_source(self.run, profile)]
                            + ([stages.drift_source(self.run)] if self.run.previous_run else []))  # fmt: skip
        if not stages.needs_prices(self.run):
            return book
        doc = {"book": book, "prices": self.risk_content(node_dir, profile)}
        if self._external_prices():  # only then: a run without external price tables keeps its params
            doc["external_prices"] = self.content(self._external_prices())
        return json.dumps(doc, sort_keys=True)

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
        """The price files a rebalance values its book at (those of every atomic sleeve and the external
        sleeves' price tables), or none."""
        if not stages.needs_prices(self.run):
            return []
        return declared(risk_prices(self.run, self.node_path(node_dir)) + self._external_prices())

    def _external_prices(self) -> list[str]:
        """The price tables of the plan's external sleeves (issue 24), in plan order."""
        from .external import external_files

        files = [external_files(s.config, self.profiles, self.run.base_dir).get("prices") for s in self.plan.external_nodes()]
        return [str(f) for f in files if f is not None]

    def rebalance_params(self, node_dir: str, profile: str | None = None) -> str:
        book = {"previous_run": self.run.previous_run, "holdings": self.run.holdings}
        trading = {"trading": self.plan.trading} if self.plan.trading else {}  # issue 24
        if self.plan.trading and self.plan.root.config["meta_allocation"].get("book"):
            trading["book"] = self.plan.root.config["meta_allocation"]["book"]  # the traded book holds them
        return json.dumps({**book, **self.plan.root.config["frictions"], **trading}, sort_keys=True)

    # ------------------------------------------------------------ external sleeves (issue 22)

    def _external_files(self, node_dir: str) -> dict[str, object]:
        from .external import external_files

        files = external_files(self.spec(node_dir).config, self.profiles, self.run.base_dir)
        out = {"returns": str(files["returns"]), "holdings": [str(h) for h in files["holdings"]]}
        if "prices" in files:  # issue 24: its own price table
            out["prices"] = str(files["prices"])
        return out

    def external_files(self, node_dir: str, profile: str | None = None) -> dict[str, object]:
        """An external sleeve's files (``returns``, ``holdings`` per risk profile), its rule's inputs."""
        return self._external_files(node_dir)

    def external_params(self, node_dir: str, profile: str | None = None) -> str:
        """An external sleeve's entry as the manifest gives it (paths as written) and the run's risk profiles."""
        spec = self.spec(node_dir)
        return json.dumps({"external": spec.config["external"], "profiles": self.profiles}, sort_keys=True)

    def external_content(self, node_dir: str, profile: str | None = None) -> str:
        """The digest of an external sleeve's files: new bytes rerun it whatever their mtime."""
        files = self._external_files(node_dir)
        return self.content(dict.fromkeys([files["returns"], *files["holdings"], *([files["prices"]] if "prices" in files else [])]))

    def final_targets(self) -> list[str]:
        """The files of rule ``all``: every final artifact of the run, or none where the runner
        names them as Snakemake's targets itself (a run directory with a wildcard-like part,
        see :func:`check_plain_runs_root`)."""
        if wildcard_like(self.run.run_dir):
            return []
        return [str(t) for t in final_targets(self.run)]
