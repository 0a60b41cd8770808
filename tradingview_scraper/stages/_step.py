"""The one adapter behind every rule: a step of the table (:mod:`tradingview_scraper.steps`) run on its rule's files."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property, partial

from .. import steps
from ..layout import ROOT, atomic_write_bytes, read_json, read_parquet, write_json, write_parquet
from ..run import RunContext
from ._common import Files, _await_prewarm, _import_numerics, _named, _stage, child_input, logger


@dataclass
class Job:
    """What a step's function may ask of its job by parameter name (see :class:`steps.Step`)."""

    ctx: RunContext
    node_path: str
    profile: str | None
    note: dict = field(default_factory=dict)  #: the step's outcome, added to its ledger params

    @cached_property
    def node(self):
        return self.ctx.spec(self.node_path)

    @cached_property
    def children(self) -> list:
        return [self.ctx.spec(c) for c in self.node.children]

    @property
    def profiles(self) -> list[str]:
        return self.ctx.plan.risk_profiles

    @property
    def plan(self):
        return self.ctx.plan

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def offload(self):
        return partial(_on_running_cluster, self.ctx)


def _read(path: str):
    """An input's value by its file type: a parquet file's DataFrame, a JSON file's value, else its path."""
    if path.endswith(".parquet"):
        return read_parquet(path)
    if path.endswith(".json"):
        return read_json(path)
    return path


def _write(path: str, value) -> None:
    """Write an output atomically by its file type: a DataFrame as parquet, a value as JSON, else bytes."""
    if path.endswith(".parquet"):
        write_parquet(path, value)
    elif path.endswith(".json"):
        write_json(path, value)
    else:
        atomic_write_bytes(path, value)


def _inputs(step: steps.Step, job: Job, files: dict) -> tuple[dict[str, str | list[str]], list[str]]:
    """The step's named inputs as the rule gave them (child files grouped by sleeve id) and the files it reads, in order."""
    named: dict = {}
    read: list[str] = []
    for name, spec in step.inputs.items():
        if isinstance(spec, steps.Children):
            kinds = [c for c in job.children if (spec.meta if c.is_meta else spec.atomic)]
            value = {c.sleeve_id: files[child_input(name, c.sleeve_id)] for c in kinds}
        else:
            if name not in files:
                continue
            value = files[name]
        if spec.per == "profiles":
            value = dict(zip(job.profiles, value, strict=True)) if isinstance(value, list) else value
        if isinstance(spec, steps.Children) and spec.per == "profiles":
            value = {sid: dict(zip(job.profiles, v, strict=True)) for sid, v in value.items()}
        if getattr(spec, "read", True):
            named[name] = value
            read += _flat(value)
    return named, read


def _flat(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [f for v in value.values() for f in _flat(v)] if isinstance(value, dict) else [f for v in value for f in _flat(v)]


def _loaded(value):
    return _read(value) if isinstance(value, str) else {k: _loaded(v) for k, v in value.items()}


def run_step(
    step: steps.Step,
    ctx: RunContext,
    node_path: str = ROOT,
    profile: str | None = None,
    *,
    input: Files | None = None,
    output: Files,
    log: str | None = None,
) -> None:
    """Run ``step`` (an entry of the table, :func:`steps.step`) for the job at ``node_path`` (and risk ``profile``) on its rule's files.

    Reads the inputs the step reads (by file type), calls its function with them and with what
    it asks of the job, writes each output the rule declares (atomically, by file type) and
    records the step, its params (:class:`steps.Step` ``ledger``) and outcome in the run's
    ledger, after checking each input against its record (``audit.check_inputs``). A custom step
    does its reading and writing in its function.

    Raises
    ------
    PipelineError
        The step's own error; any other exception becomes a StageError naming the step and node.
    KeyError
        The rule did not give an input the step reads (a child's file, say).
    """
    fn = step.load()
    if step.numeric:  # job threads importing scikit-learn for the first time at once can see half a module
        _await_prewarm()
        _import_numerics()
    if step.custom:
        kw = {"profile": profile} if profile is not None else {}
        fn(ctx, node_path, input=input or {}, output=output, log=log, **kw)
        return
    job = Job(ctx, node_path, profile)
    named, read = _inputs(step, job, _named(input or {}))
    outs = _named(output)
    targets = [f for v in outs.values() for f in ([v] if isinstance(v, str) else v)]
    params = step.ledger(job) if step.ledger else {}
    with _stage(ctx, step.name, node_path, log, params, read, targets) as rec:
        wanted = inspect.signature(fn).parameters
        kwargs = {k: (_loaded(named[k]) if k in named else getattr(job, k)) for k in wanted}
        result = fn(**kwargs)
        # One output: the function returns its value; several: output name -> value.
        values = result if len(outs) > 1 else {next(iter(outs)): result}
        for out_name, path in outs.items():
            if isinstance(path, list):
                for p, file in zip(job.profiles, path, strict=True):
                    _write(file, values[out_name][p])
            else:
                _write(path, values[out_name])
        rec.params.update(job.note)


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

