"""The one adapter behind every rule: a step of the table (:mod:`tradingview_scraper.steps`) run on its rule's files."""

from __future__ import annotations

import inspect
import os
from functools import partial

from .. import layout, steps
from ..run import RunContext
from . import _reuse
from ._common import Files, _import_numerics, _named, _stage, child_input, console_warning, logger


class Job:
    """What a step's function may ask of its job by parameter name (see :class:`steps.Step`)."""

    def __init__(self, ctx: RunContext, node_path: str, profile: str | None) -> None:
        self.profile, self.plan, self.run_id = profile, ctx.plan, ctx.run_id
        self.profiles = ctx.plan.risk_profiles
        self.node, self.node_dir = ctx.spec(node_path), ctx.node(node_path)  # its plan node and its directory
        self.children = [ctx.spec(c) for c in self.node.children]
        self.offload = partial(_on_running_cluster, ctx)  # fn on the run's cluster when it is up
        self.note: dict = {}  # the step's outcome, added to its ledger params
        # the runs root's window and report stores, None when reuse is off
        self.windows, self.report_store = ctx.store("windows"), ctx.store("report")
        self.cluster = ctx.cluster  # the run's Ray cluster (None: sequential)
        self.base_dir, self.runs_root = ctx.base_dir, ctx.runs_root  # relative data paths, other runs
        # The run's current book (a rebalance).
        self.previous_run, self.holdings = ctx.previous_run, ctx.holdings
        # Files from outside the run the step read that its rule could not declare (a path Snakemake
        # would take for a wildcard): recorded as read all the same.
        self.reads: list[str] = []
        # A line the person running the pipeline must see; the node store keeps them (a reused step tells them again).
        self.warnings: list[str] = []
        self.warn = partial(_tell, self.warnings)


def _tell(warnings: list[str], message: str) -> None:
    console_warning(message)
    warnings.append(message)


def _inputs(step: steps.Step, job: Job, files: dict) -> tuple[dict, list[str]]:
    """The named inputs the step reads, as paths (a child's grouped by sleeve id, a file per risk
    profile by profile, an outside source's named files by name), and the files the ledger records
    as read: in the rule's order (the node's own files per risk profile first, profile by profile),
    each once, a file from outside the run by its absolute path."""

    def per(spec, value):
        return dict(zip(job.profiles, value, strict=True)) if getattr(spec, "per", None) == "profiles" else value

    named: dict = {}
    read: list[str] = []
    by_profile = [n for n, spec in step.inputs.items() if isinstance(spec, steps.Own) and spec.per == "profiles"]
    for name, spec in step.inputs.items():
        if isinstance(spec, steps.Children):
            kind = [c for c in job.children if (spec.meta if c.is_meta else spec.atomic)]
            if spec.when and not all(child_input(name, c.sleeve_id) in files for c in kind):
                continue  # an input only some jobs have (``when``)
            value = {c.sleeve_id: per(spec, files[child_input(name, c.sleeve_id)]) for c in kind}
        elif name in files:
            value = per(spec, files[name])
        elif isinstance(spec, steps.Outside):  # a source of named files (none: an empty input)
            value = {k: v for k, v in files.items() if k.partition(":")[0] not in step.inputs}
        else:
            continue  # an input only some jobs have (``when``)
        if getattr(spec, "read", True):
            named[name] = value
            outside = isinstance(spec, steps.Outside)
            if name not in by_profile:
                read += [os.path.abspath(f) if outside else f for f in _flat(value)]
    first = [named[n][p] for p in job.profiles for n in by_profile if n in named]
    return named, list(dict.fromkeys(first + read))


def _flat(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [f for v in (value.values() if isinstance(value, dict) else value) for f in _flat(v)]


def _loaded(spec: steps.Input, value):
    """An input as the step's function gets it, grouped as its paths are: a file from outside the
    run as its path (its format is the step's to read), a parquet file as its DataFrame (with its
    metadata: a :class:`steps.Parquet`), a JSON file as its value."""
    if isinstance(spec, steps.Outside):
        return value
    if isinstance(value, dict):
        return {k: _loaded(spec, v) for k, v in value.items()}
    if not value.endswith(".parquet"):
        return layout.read_json(value)
    frame = layout.read_parquet(value)
    return steps.Parquet(frame, layout.read_parquet_metadata(value)) if getattr(spec, "metadata", False) else frame


def _write(path: str, value) -> None:
    """Write an output atomically: bytes as they are, else by its file type (a DataFrame or a
    :class:`steps.Parquet` as parquet, a value as JSON)."""
    if isinstance(value, bytes):
        layout.atomic_write_bytes(path, value)
    elif isinstance(value, steps.Parquet):
        layout.write_parquet(path, value.frame, metadata=value.metadata)
    elif path.endswith(".parquet"):
        layout.write_parquet(path, value)
    else:
        layout.write_json(path, value)


def run_step(
    step: steps.Step,
    ctx: RunContext,
    node_path: str = layout.ROOT,
    profile: str | None = None,
    *,
    input: Files | None = None,
    output: Files,
    params: Files | None = None,
    log: str | None = None,
) -> None:
    """Run ``step`` (an entry of the table, :func:`steps.step`) for the job at ``node_path`` (and risk ``profile``) on its rule's files.

    Reads the inputs the step reads (by file type; a file from outside the run is handed as its
    path), calls its function with them and with what it asks of the job, writes each output the
    rule declares (atomically: bytes as they are, else by file type; the first output last, so
    that its file says the others are written) and records the step, its params
    (:class:`steps.Step` ``ledger``) and outcome in the run's ledger, after checking each input
    against its record (``audit.check_inputs``).

    ``params``: the rule's evaluated params (name -> value). With them, a step the table lets
    reuse (:class:`steps.Step` ``reuse``) first looks its job up in the runs root's node store
    (``ctx.store("nodes")``, none when ``reuse`` is off): an earlier run's outputs of the same
    step, node, risk profile, params and input bytes are copied into the outputs, checked
    against their recorded sha256, and recorded in the ledger as reused (``params["reused"]``:
    the run and its run-relative artifacts); otherwise the step computes and its outputs are
    recorded in the store.

    Raises
    ------
    PipelineError
        The step's own error; any other exception becomes a StageError naming the step and node.
    KeyError
        The rule did not give an input the step reads (a child's file, say).
    """
    files, outs = _named(input or {}), _named(output)
    job = Job(ctx, node_path, profile)
    store = ctx.store("nodes") if step.reuse and params is not None else None
    entry = None
    if store is not None:
        key = _reuse.job_key(step, ctx, node_path, profile, files, outs, params)
        earlier = _reuse.lookup(store, key, ctx, outs)
        entry = None if earlier is None else _reused(step, job, ctx, files, outs, earlier, log)
    if entry is None:
        entry = _compute(step, job, ctx, files, outs, log)
    if store is not None:
        _reuse.remember(store, key, ctx, outs, entry)  # the newest run holding the files


def _reused(step: steps.Step, job: Job, ctx: RunContext, files: dict, outs: dict, earlier: dict, log: str | None) -> dict | None:
    """Take an earlier run's outputs of the job and record the step as reused: its ledger entry, or None if they are not intact."""
    artifacts = _reuse.take(earlier, ctx, outs)
    if artifacts is None:
        return None
    params = {**earlier["params"], "reused": {"run": earlier["run"], "artifacts": artifacts}}
    with _stage(ctx, step.name, job.node.path, job.profile, log, params, _inputs(step, job, files)[1], _flat(outs)) as rec:
        logger.info("%s %s: reused from run %s", step.name, job.node.path, earlier["run"])
        for warning in earlier.get("warnings", []):  # what the computing run told its user, told again
            job.warn(warning)
    return {**rec.entry, "warnings": job.warnings}


def _compute(step: steps.Step, job: Job, ctx: RunContext, files: dict, outs: dict, log: str | None) -> dict:
    """Run the step's function on the rule's files (see :func:`run_step`): its ledger entry, with the warnings it gave."""
    fn = step.load()
    if step.numeric:
        _import_numerics()
    named, read = _inputs(step, job, files)
    params = step.ledger(job) if step.ledger else {}
    with _stage(ctx, step.name, job.node.path, job.profile, log, params, read, _flat(outs)) as rec:
        # a declared input this job does not have (``when``) is left to the parameter's default
        wanted = [k for k in inspect.signature(fn).parameters if k in named or k not in step.inputs]
        result = fn(**{k: _loaded(step.inputs[k], named[k]) if k in named else getattr(job, k) for k in wanted})
        # One output: the function returns its value; several: output name -> value.
        values = result if len(outs) > 1 else {next(iter(outs)): result}
        first, *rest = outs  # the first output last: its file says the job's others are written
        for name in [*rest, first]:
            if isinstance(outs[name], list):
                for p, path in zip(job.profiles, outs[name], strict=True):
                    _write(path, values[name][p])
            else:
                _write(outs[name], values[name])
        rec.inputs += [p for p in dict.fromkeys(map(os.path.abspath, job.reads)) if p not in rec.inputs]
        rec.params.update(job.note)
    return {**rec.entry, "warnings": job.warnings}


def _on_running_cluster(ctx: RunContext, name: tuple[str, str], fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the run's Ray cluster if it is already up, else in-process.

    The meta stages run as threads of the driver and would share its GIL; when the
    sleeves have started a cluster, its workers (with skfolio already imported) run the
    risk profiles' optimizations in parallel. No cluster is started for this. ``name`` is
    ``(node label, risk profile)``: a failed task is a MetaError naming both.
    """
    if ctx.cluster is None or not ctx.cluster.is_up:
        return fn(*args, **kwargs)
    result, provenance = ctx.cluster.map(fn, [(name, args, kwargs)], max_retries=1, kind="meta")[name]
    for warning in provenance["warnings"]:
        logger.info("%s (%s) warned on its worker: %s", *name, warning)
    return result
