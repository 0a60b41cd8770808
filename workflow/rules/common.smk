# Config validation, the run and its owner, and the input functions (get_<noun>) of the workflow.
# The input functions live in tradingview_scraper.wiring, the run's lifecycle in
# tradingview_scraper.owner (plain, tested Python); here they are only wired to Snakemake.
# Imports stay light: pandas, skfolio and ray load inside stages.

from snakemake.utils import validate

from tradingview_scraper import codehash, deps, stages
from tradingview_scraper.errors import PipelineError
from tradingview_scraper.layout import node_pattern as artifact  # a rule's file patterns: artifact(name, **fields)
from tradingview_scraper.owner import RunOwner, reported
from tradingview_scraper.run import RunContext
from tradingview_scraper.wiring import Wiring, tune_gc_for_dag


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
PLAN, PROFILES = W.plan, W.profiles
tune_gc_for_dag()


def node_path(wildcards):
    return W.node_path(wildcards.node)


def get_sleeve_prices(wildcards):
    return W.sleeve_prices(wildcards.node)


def get_sleeve_content(wildcards):
    return W.sleeve_content(wildcards.node)


def get_pin_content(wildcards):
    return W.pin_content(wildcards.node)


def get_risk_content(wildcards):
    return W.risk_content(wildcards.node)


def get_rebalance_content(wildcards):
    return W.rebalance_content(wildcards.profile)


def get_sleeve_params(wildcards):
    return W.sleeve_params(wildcards.node)


def get_sleeve_cpus(wildcards):
    return W.sleeve_cpus(wildcards.node)


def get_pin_source(wildcards):
    return W.pin_source(wildcards.node)


def get_children_interface(wildcards):
    return W.children_interface(wildcards.node)


def get_meta_params(wildcards):
    return W.meta_params(wildcards.node)


def get_node_streams(wildcards):
    return W.node_streams(wildcards.node)


def get_flatten_inputs(wildcards):
    return W.flatten_inputs(wildcards.node, wildcards.profile)


def get_risk_inputs(wildcards):
    return W.risk_inputs(wildcards.node)


def get_rebalance_book(wildcards):
    return W.rebalance_book(wildcards.profile)


def get_rebalance_params(wildcards):
    return W.rebalance_params()


def get_plan_source(wildcards):
    # A function: Snakemake would format a plain string's braces (a manifest path's) as wildcards.
    return W.plan_source


def get_report_inputs(wildcards):
    return W.report_inputs(wildcards.node)


def get_final_targets(wildcards):
    # Evaluated first while the DAG is built, when Snakemake knows whether jobs will execute:
    # only then is the run directory claimed (checks, lock, damaged artifacts discarded).
    executing = workflow.executor_plugin is not None and not workflow.dryrun and not workflow.touch
    try:
        if OWNER is not None and executing:
            OWNER.claim()
    except PipelineError as exc:
        raise WorkflowError(str(exc)) from None
    return W.final_targets()


def dag_outputs():
    """Every output of the run's DAG, or None when it is not the whole run (explicit targets, --until, ...)."""
    s = workflow.dag_settings
    if s.targets or s.target_jobs or s.until or s.omit_from or s.allowed_rules:
        return None
    return [str(f) for job in workflow.dag.jobs for f in job.output]


def start_run():
    """onstart: the owner watches signals (the scheduler just set its own), claims, starts the cluster."""
    try:
        OWNER.start(any(job.rule.name == "sleeve" for job in workflow.dag.needrun_jobs()), dag_outputs())
    except PipelineError as exc:
        raise WorkflowError(str(exc)) from None


def finish_run(failed=False):
    """onsuccess / onerror: the owner's verdict (a damaged artifact fails a run that succeeded)."""
    error = OWNER.finish(failed)
    if error is not None and not failed:
        raise WorkflowError(str(error))
