# Config validation, the run and its owner, and the input functions (get_<noun>) of the workflow.
# The input functions live in tradingview_scraper.rule_inputs, the run's lifecycle in
# tradingview_scraper.owner (plain, tested Python); here they are only wired to Snakemake.
# Imports stay light: pandas, skfolio and ray load inside stages.

import functools

from snakemake.utils import validate

from tradingview_scraper import stages, steps
from tradingview_scraper.errors import PipelineError
from tradingview_scraper.layout import node_pattern as artifact  # a rule's file patterns: artifact(name, **fields)
from tradingview_scraper.owner import RunOwner, reported
from tradingview_scraper.run import RunContext
from tradingview_scraper.rule_inputs import Wiring, targets, tune_gc_for_dag


validate(config, schema="../schemas/config.schema.yaml")


def pass_to_jobs(settings):
    """Give ``settings`` to this run's jobs wherever they execute (threads, cluster-generic, SLURM).

    A spawned job re-parses this workflow with the main process's ``--config`` and nothing
    else of ours (a scheduler need not export the environment).
    """
    config.update(settings)
    workflow.config_settings.config_args = list(workflow.config_settings.config_args or []) + [
        f"{k}={v}" for k, v in settings.items()
    ]


# The run's one owner lives in the main process (the runner's, handed over, or a new one for
# the plain command); a job re-parsing the workflow elsewhere only needs the run.
try:
    OWNER = RunOwner.for_workflow(config, pass_to_jobs=pass_to_jobs) if workflow.is_main_process else None
    if OWNER is not None:
        # Rule sleeve reserves ray_cpus: no more sleeves run at once than the cluster's CPUs.
        if OWNER.cluster is not None and "ray_cpus" not in workflow.global_resources:
            workflow.register_resource("ray_cpus", OWNER.ray_cpus())
        RUN = OWNER.run
    else:
        with reported():
            RUN = RunContext.from_config(config)
except PipelineError as exc:
    raise WorkflowError(str(exc)) from None

W = Wiring(RUN)
PROFILES = W.profiles
tune_gc_for_dag()


def node_path(wildcards):
    return W.node_path(wildcards.node)


def step_inputs(step, wildcards):
    return W.inputs(step, wildcards.node, getattr(wildcards, "profile", None))


def get_inputs(step):
    """The named inputs of a step (an input function), derived from its table entry."""
    return functools.partial(step_inputs, step)


# Every step's code trigger, computed once per parse (the adapter's part is shared).
CODES = steps.codes()


def step_param(step, key, wildcards):
    return W.param(step, key, wildcards.node, getattr(wildcards, "profile", None))


def get_params(step):
    """The params of a step: its code trigger and, as input functions, those of :func:`steps.rule_params`."""
    params = {key: functools.partial(step_param, step, key) for key in steps.rule_params(step)}
    return {**params, "code": CODES[step]}


def run_step(step, wildcards, input, output, params, log):
    """What the step runs: the one adapter, on the files its rule declares (its params key reuse across runs)."""
    stages.run_step(
        steps.step(step), RUN, node_path(wildcards), getattr(wildcards, "profile", None),
        input=input, output=output, params=params, log=log[0],
    )


def get_sleeve_cpus(wildcards):
    return W.sleeve_cpus(wildcards.node)


def get_final_targets(wildcards):
    # Evaluated first while the DAG is built, when Snakemake knows whether jobs will execute:
    # only then is the run directory claimed (checks, lock, damaged artifacts discarded).
    executing = workflow.executor_plugin is not None and not workflow.dryrun and not workflow.touch
    try:
        if OWNER is not None and executing:
            OWNER.claim()
    except PipelineError as exc:
        raise WorkflowError(str(exc)) from None
    return targets(RUN, runner=False)


def dag_outputs():
    """Every output of the run's DAG, or None when it is not the whole run (explicit targets, --until, ...)."""
    s = workflow.dag_settings
    if s.targets or s.target_jobs or s.until or s.omit_from or s.allowed_rules:
        return None
    return [str(f) for job in workflow.dag.jobs for f in job.output]


def computes_sleeve(job):
    """Whether ``job`` computes a sleeve: a sleeve job an earlier run's node store cannot stand in for."""
    if job.rule.name != "sleeve":
        return False
    return not stages.reusable(
        steps.step("sleeve"), RUN, node_path(job.wildcards), None, input=job.input, output=job.output, params=job.params
    )


def start_run():
    """onstart: the owner watches signals (the scheduler just set its own), claims, starts the cluster."""
    try:
        OWNER.start(
            any(computes_sleeve(job) for job in workflow.dag.needrun_jobs()),
            dag_outputs(),
            jobs_in_process=workflow.executor_plugin.common_settings.local_exec and workflow.execution_settings.use_threads,
        )
    except PipelineError as exc:
        raise WorkflowError(str(exc)) from None


def finish_run(failed=False):
    """onsuccess / onerror: the owner's verdict (a damaged artifact fails a run that succeeded)."""
    error = OWNER.finish(failed)
    if error is not None and not failed:
        raise WorkflowError(str(error))
