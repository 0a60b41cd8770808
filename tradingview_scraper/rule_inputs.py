"""What the workflow's rules ask: node patterns, named inputs, params and final targets.

``workflow/rules/common.smk`` builds one :class:`Wiring` per process (of the run's owner's
run, or of the config in a job process) and only forwards to it; the plain functions
take a :class:`run.RunContext`. Everything here is tested without Snakemake (this module
never imports it) and returns path strings, as Snakemake expects.
"""

from __future__ import annotations

import functools
import gc
import json
import math
from collections.abc import Callable
from pathlib import Path

from . import audit, current_book, deps, stages, steps
from .engines import HIERARCHICAL
from .external import external_files
from .layout import NODE_FILES, literal_files, regex_literal, run_node, wildcard_like
from .manifest import ROOT
from .run import RunContext

#: A pattern that matches nothing: the constraint of a node kind the plan does not have.
NOTHING = "(?!)"


def alternation(dirs: list[Path | str]) -> str:
    """A regex matching exactly one of ``dirs``."""
    return "|".join(regex_literal(d) for d in dirs) or NOTHING


def computed_sleeve_pattern(run_dir: Path | str, excluded: list[Path | str]) -> str:
    """A regex for the ``{node}`` of a computed sleeve: any node directory but ``excluded``.

    A node directory is the run directory or a chain of ``sleeves/<id>`` below it. The
    lookahead refuses a value that is exactly an excluded directory (one not continued by
    ``/sleeves/<id>``), whatever the output's path below the node looks like; it costs the
    same for ten sleeves or ten thousand, where an alternation of every sleeve would not.
    """
    node = rf"{regex_literal(run_dir)}(?:/sleeves/[^/]+)*"
    if not excluded:
        return node
    return rf"(?!(?:{alternation(excluded)})(?!/sleeves/[^/]+)){node}"


def declared(files: str | list[str]) -> str | list[str]:
    """A path from outside the run (a price file, a holdings file, a previous run's book), or a list
    of them, as a rule declares it: only a path Snakemake takes literally (``[]``: none).

    A path with a wildcard-like part (such as ``{profile}``) stays out of Snakemake's inputs (a
    spelling through ``{node}/..`` would need the node's directory to exist before its job
    runs); the rule's ``content`` param (:meth:`Wiring.outside_content`) still carries its bytes,
    so an edit reruns the rule all the same.
    """
    if isinstance(files, list):
        return [str(f) for f in files if not wildcard_like(f)]
    return [] if wildcard_like(files) else str(files)


def _paths(files) -> list[str]:
    """The paths of a source's result (a path, a list of them or a dict of either), in order."""
    if isinstance(files, str):
        return [files]
    return [f for v in (files.values() if isinstance(files, dict) else files) for f in _paths(v)]


def tune_gc_for_dag() -> None:
    """Exempt what parsing built from the cycle collector and collect less often.

    A DAG of thousands of jobs allocates millions of objects that live until the run ends;
    the default collector rescans them on every 700 allocations (docs/performance.md). The
    runner restores its caller's thresholds when the run ends.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# ------------------------------------------------------------------ the rules' named inputs
# Each returns what one rule's ``input:`` declares, named as its stage reads it (plain path
# strings; one file per risk profile, in the plan's order, where a name holds a list).


def step_inputs(run: RunContext, name: str, node_path: str, profile: str | None = None) -> dict[str, str | list[str]]:
    """Rule ``name``'s inputs from the run's own tree, as its step's entry names them (:mod:`steps`):
    the node's files (:class:`steps.Own`) and each child's (:class:`steps.Children`, named
    ``<input>:<sleeve id>``). Files from outside the run (:class:`steps.Outside`) are :class:`Wiring`'s."""
    node, profiles = run.node(node_path), run.plan.risk_profiles

    def files(n, artifact: str, per: str | None):
        if per == "profiles":
            return [str(n.file(artifact, profile=p)) for p in profiles]
        return str(n.file(artifact, profile=profile) if per == "profile" else n.file(artifact))

    out: dict[str, str | list[str]] = {}
    for key, spec in steps.step(name).inputs.items():
        if isinstance(spec, steps.Own):
            book = node_path == ROOT and (run.previous_run or run.holdings)
            if spec.when is None or (spec.when == "book" and book) or (spec.when == "previous_run" and run.previous_run):
                out[key] = files(node, spec.artifact, spec.per)
        elif isinstance(spec, steps.Children):
            if spec.when == "limits" and not run.spec(node_path).config["meta_allocation"].get("book"):
                continue
            for c in run.spec(node_path).children:
                child = run.spec(c)
                artifact = spec.meta if child.is_meta else spec.atomic
                if artifact:
                    out[stages.child_input(key, child.sleeve_id)] = files(run.node(c), artifact, spec.per)
    return out


def targets(run: RunContext, *, runner: bool) -> list[str]:
    """Every final artifact of ``run`` as the files of rule ``all`` (``runner=False``) or as the
    runner's targets: rule ``all`` holds them unless the run directory has a wildcard-like part
    (Snakemake would format it, see :meth:`owner.RunOwner.for_workflow`), then the runner names them."""
    if wildcard_like(run.run_dir) != runner:
        return []
    plan, root, profiles = run.plan, run.root, run.plan.risk_profiles
    files = [root.file("resolved"), root.file("returns")]
    if plan.root.is_meta:
        files += [root.file("flattened", profile=p) for p in profiles]
        for meta in plan.meta_nodes():  # every level is a run directory of its own, with its report
            node = run.node(meta.path)
            for name in steps.meta_targets():  # the steps' final artifacts at every meta node
                per = "{profile}" in NODE_FILES[name]
                files += [node.file(name, profile=p) for p in profiles] if per else [node.file(name)]
        if run.previous_run or run.holdings:
            files += [root.file("rebalance", profile=p) for p in profiles]
            if plan.trading:  # issue 24: the orders of the traded book
                files += [root.file("orders", profile=p) for p in profiles]
    else:
        files += [root.file(k) for k in ("health", "sign_test", "provenance")]
        files += [root.file("weights", profile=p) for p in profiles]
    return [str(f) for f in files]


class Wiring:
    """The run's plan as the rules need it: the patterns of their ``{node}`` and ``{profile}``, and
    the inputs and params their steps' entries name (:mod:`steps`).

    A param method ``<name>(node_dir, profile)`` gives what a step's result depends on besides
    its inputs' content and code: settings. A source method names the files a step reads from
    outside the run (:class:`steps.Outside`); the rule declares them (:meth:`inputs`) and their
    bytes are its ``content`` param (:meth:`outside_content`).

    Parameters
    ----------
    run : RunContext
        The run (plan, run id, directories, cluster).
    """

    def __init__(self, run: RunContext) -> None:
        self.run, self.plan = run, run.plan
        self.profiles = self.plan.risk_profiles
        self._paths = {str(run.node(path).dir): path for path in self.plan.nodes}
        meta = [run.node(n.path).dir for n in self.plan.meta_nodes()]
        pinned = [run.node(n.path).dir for n in self.plan.atomic_nodes() if n.pin]
        external = [run.node(n.path).dir for n in self.plan.external_nodes()]
        self.external_nodes = alternation(external)
        self.meta_nodes = alternation(meta)
        self.root_node = alternation([run.run_dir])
        self.pinned_nodes = alternation(pinned)
        self.sleeve_nodes = (
            computed_sleeve_pattern(run.run_dir, meta + pinned + external) if self.plan.root.is_meta else alternation([run.run_dir])
        )
        self.hierarchical_profiles = "|".join(p for p in self.profiles if p in HIERARCHICAL) or NOTHING
        self.flat_profiles = "|".join(p for p in self.profiles if p not in HIERARCHICAL) or NOTHING
        self._memo: dict[tuple, object] = {}

    def _once(self, key: tuple, compute: Callable[[], object]):
        """``compute()``, once per ``key`` in this process: sleeves of one atomic profile share their
        params and price files."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @functools.cached_property
    def _known(self) -> deps.Known:
        """The ledger's record of each file read from outside the run (read, never written, here), and each
        file hashed since: a file whose stat is unchanged is not hashed again (:func:`deps.file_digest`)."""
        return audit.recorded_inputs(self.run.run_dir)

    def node_path(self, node_dir: str) -> str:
        """Plan path (``"."`` or ``"sleeves/a/..."``) of a ``{node}`` directory."""
        return self._paths.get(node_dir) or self.run.path_of(node_dir)

    def spec(self, node_dir: str):
        return self.plan.nodes[self.node_path(node_dir)]

    def inputs(self, name: str, node_dir: str, profile: str | None = None) -> dict[str, str | list[str]]:
        """Rule ``name``'s named inputs for the job at ``node_dir`` (and ``profile``), from its step's entry
        (:mod:`steps`): the run's own files spelled through ``{node}`` (:func:`layout.literal_files`), and
        the files from outside the run ``self.<source>`` names: named ones (the step reads each) spelled
        literally, a path or a list as the rule can declare them (:func:`declared`)."""
        files = literal_files(step_inputs(self.run, name, self.node_path(node_dir), profile), node_dir)
        for key, found in self._outside(name, node_dir, profile).items():
            files.update(literal_files(found, node_dir) if isinstance(found, dict) else {key: declared(found)})
        return files

    def _outside(self, name: str, node_dir: str, profile: str | None) -> dict[str, object]:
        """Input name -> what ``self.<source>`` names, for each :class:`steps.Outside` input of step ``name``."""
        specs = steps.step(name).inputs.items()
        return {key: getattr(self, spec.source)(node_dir, profile) for key, spec in specs if isinstance(spec, steps.Outside)}

    def param(self, name: str, key: str, node_dir: str, profile: str | None = None) -> str:
        """Param ``key`` of rule ``name`` for the job at ``node_dir`` (and ``profile``) (:func:`steps.rule_params`)."""
        if key == steps.CONTENT:
            return self.outside_content(name, node_dir, profile)
        return getattr(self, steps.step(name).params[key])(node_dir, profile)

    def outside_content(self, name: str, node_dir: str, profile: str | None = None) -> str:
        """The digest of every file step ``name`` reads from outside the run (its :class:`steps.Outside`
        sources), those its rule cannot declare (:func:`declared`) included: new bytes rerun the job
        whatever their mtime (:func:`deps.content_digest`)."""
        paths = dict.fromkeys(f for found in self._outside(name, node_dir, profile).values() for f in _paths(found))
        return deps.content_digest(paths, self._known)

    def sleeve_cpus(self, node_dir: str) -> int:
        return math.ceil(self.spec(node_dir).config["backtest"].get("num_cpus", 1))

    def _atomic_below(self, node_dir: str) -> list:
        """The specs of the atomic nodes below meta node ``node_dir``, at any depth, in plan order (the
        plan lists a node before its children); external sleeves included."""
        top = self.node_path(node_dir)
        below = [s for path, s in self.plan.nodes.items() if path != top and (top == ROOT or path.startswith(top + "/"))]
        return [s for s in below if not s.is_meta]

    def _price_files(self, spec) -> list[str]:
        """The price files atomic sleeve ``spec`` reads (:func:`deps.price_files`), listed once per atomic profile."""
        data, symbols = spec.config["data"], spec.config["universe"].get("symbols")
        return self._once(("prices", spec.profile), lambda: [str(f) for f in deps.price_files(data, symbols, self.run.base_dir)])

    def _data_blocks(self, node_dir: str) -> list[str]:
        """How the atomic sleeves below ``node_dir`` read their prices: each distinct ``data`` block with its symbols (JSON, sorted)."""
        specs = [s for s in self._atomic_below(node_dir) if s.kind == "atomic"]
        return sorted({json.dumps([s.config["data"], s.config["universe"].get("symbols")], sort_keys=True) for s in specs})

    # ------------------------------------------------------------------ params

    def plan_params(self, node_dir: str, profile: str | None = None) -> str:
        """The resolved plan's identity (cheaper to serialize than the plan, which is derived from it)."""
        keys = {"profile": self.plan.profile, "risk_profiles": self.profiles, "manifest": self.plan.manifest_path,
                "manifest_sha256": self.plan.manifest_sha256, "execute_sleeves": self.run.execute_sleeves}  # fmt: skip
        return json.dumps(keys, sort_keys=True)

    def sleeve_params(self, node_dir: str, profile: str | None = None) -> str:
        """A sleeve's resolved config and pin; a skfolio dataset ships inside skfolio, so its version pins the prices."""
        spec = self.spec(node_dir)
        return self._once(("sleeve", spec.profile, spec.pin), lambda: json.dumps(
            {"config": spec.config, "profiles": self.profiles, "pin": spec.pin, "dataset": deps.dataset_pin(spec.config["data"])},
            sort_keys=True,
        ))  # fmt: skip

    def meta_params(self, node_dir: str, profile: str | None = None) -> str:
        spec = self.spec(node_dir)
        params = {k: spec.config[k] for k in ("meta_allocation", "backtest", "health")}
        # Risk profiles defined as estimators (issue 22): their definitions rerun the node's meta
        # jobs when edited. Absent for built-in profiles, so those params keep their bytes.
        if "estimators" in spec.config:
            params["estimators"] = spec.config["estimators"]
        return json.dumps(params, sort_keys=True)

    def risk_params(self, node_dir: str, profile: str | None = None) -> str:
        """How the atomic sleeves below a meta node read the prices its risk job loads (:meth:`_data_blocks`)."""
        return json.dumps(self._data_blocks(node_dir))

    def rebalance_params(self, node_dir: str, profile: str | None = None) -> str:
        """The current book, the frictions, the trading settings and, when the book is valued at the
        sleeves' prices (:func:`current_book.needs_prices`), how they are read (:meth:`_data_blocks`)."""
        run, plan = self.run, self.plan
        doc = {"previous_run": run.previous_run, "holdings": run.holdings, **plan.root.config["frictions"]}
        if plan.trading:  # issue 24
            doc["trading"] = plan.trading
            if plan.root.config["meta_allocation"].get("book"):
                doc["book"] = plan.root.config["meta_allocation"]["book"]  # the traded book holds them
        if current_book.needs_prices(run.previous_run, run.holdings, plan.trading):
            doc["data"] = self._data_blocks(node_dir)
        return json.dumps(doc, sort_keys=True)

    def external_params(self, node_dir: str, profile: str | None = None) -> str:
        """An external sleeve's entry as the manifest gives it (paths as written) and the run's risk profiles."""
        spec = self.spec(node_dir)
        return json.dumps({"external": spec.config["external"], "profiles": self.profiles}, sort_keys=True)

    # ------------------------------------------------- files from outside the run
    # Each names the files as they are; ``inputs`` spells them for the rule, ``outside_content`` hashes them.

    def sleeve_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The price files a computed sleeve reads (table and TradingView sources; none for skfolio)."""
        return self._price_files(self.spec(node_dir))

    def pin_source(self, node_dir: str, profile: str | None = None) -> dict[str, str | list[str]]:
        """The checked source's files a pinned sleeve copies (``returns``, ``health``, ``sign_test``,
        ``weights``), and its ``provenance`` and run's ``resolved`` manifest if present."""
        from .owner import reported  # the owner imports this module

        def files() -> dict[str, str | list[str]]:
            src = stages.pin_source(self.run, self.node_path(node_dir))
            out: dict[str, str | list[str]] = {k: str(src.file(k)) for k in stages.PIN_REQUIRED}
            out["weights"] = [str(src.file("weights", profile=p)) for p in self.profiles]
            optional = {"provenance": src.file("provenance"), "resolved": run_node(self.spec(node_dir).pin, self.run.runs_root).file("resolved")}
            return {**out, **{k: str(f) for k, f in optional.items() if f.is_file()}}

        with reported():
            return self._once(("pin", node_dir), files)

    def risk_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The price files the risk job of ``node_dir`` may read: those of every atomic sleeve below it,
        pinned ones included (a position's prices come from the sleeve that holds it), and the returns
        file of every external sleeve below it."""
        files: dict[str, None] = {}
        for spec in self._atomic_below(node_dir):
            if spec.kind == "external":  # its positions' returns are its stream (the risk stage reads the file)
                files[str(external_files(spec.config, self.profiles, self.run.base_dir)["returns"])] = None
            else:
                files.update(dict.fromkeys(self._price_files(spec)))
        return list(files)

    def rebalance_book(self, node_dir: str, profile: str) -> str:
        """The current book's file (the holdings file or the previous run's flattened file)."""
        run = self.run
        # resolved: the rebalance records the book it read at its own path, whatever the working directory
        return str(current_book.rebalance_source(run.previous_run, run.holdings, run.runs_root, profile).resolve())

    def rebalance_since(self, node_dir: str, profile: str | None = None) -> str | list[str]:
        """The previous run's ``returns.parquet`` (its last date: where its book drifts from), or none."""
        return str(current_book.drift_source(self.run.previous_run, self.run.runs_root)) if self.run.previous_run else []

    def rebalance_prices(self, node_dir: str, profile: str | None = None) -> list[str]:
        """The files a rebalance values its book through (those the risk step reads: every atomic sleeve's
        prices and the external sleeves' returns, and the external sleeves' price tables), or none."""
        if not current_book.needs_prices(self.run.previous_run, self.run.holdings, self.plan.trading):
            return []
        external = [external_files(s.config, self.profiles, self.run.base_dir).get("prices") for s in self.plan.external_nodes()]
        return self.risk_prices(node_dir) + [str(f) for f in external if f is not None]

    def external_files(self, node_dir: str, profile: str | None = None) -> dict[str, object]:
        """An external sleeve's files (``returns``, ``holdings`` per risk profile, its ``prices`` table if any)."""
        files = external_files(self.spec(node_dir).config, self.profiles, self.run.base_dir)
        return {k: [str(f) for f in v] if isinstance(v, list) else str(v) for k, v in files.items()}
