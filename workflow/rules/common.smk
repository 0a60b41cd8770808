# Every Python helper of the workflow: config validation, the run context, wildcard
# constraints and the input functions (get_<noun>). Imports stay light: the package's
# heavy modules (pandas, skfolio, ray) load inside the stage functions.

import functools
import gc
import json
import math
import re

from snakemake.utils import validate

from tradingview_scraper import audit, deps, runlock, stages
from tradingview_scraper.cluster import watch_interrupts
from tradingview_scraper.errors import PipelineError
from tradingview_scraper.orchestration import signals
from tradingview_scraper.run import RunContext


validate(config, schema="../schemas/config.schema.yaml")


def pass_to_jobs(settings):
    """Give ``settings`` to this run's jobs wherever they execute (threads, cluster-generic, SLURM).

    A spawned job re-parses this workflow with the main process's ``--config`` and nothing
    else of ours (a scheduler need not export the environment), so the run id and the
    cluster's address and token file travel there.
    """
    config.update(settings)
    args = list(workflow.config_settings.config_args or [])
    workflow.config_settings.config_args = args + [f"{k}={v}" for k, v in settings.items()]


try:
    RUN = RunContext.from_config(config)
    if workflow.is_main_process:
        # Before the DAG is built: an artifact whose bytes differ from its audit record is
        # deleted with what was computed from it (one line each), so that chain reruns.
        stages.discard_damaged(RUN.run_dir, RUN.run_id)
    START_SEQ = audit.last_seq(RUN.run_dir)  # failures after it are this run's
except PipelineError as exc:
    stages.report_at_exit(exc)  # the plain command's last line
    raise WorkflowError(str(exc)) from None

# The run's Ray cluster (None: sequential). The main process owns it: it starts a private
# one in onstart and stops it in onsuccess/onerror; jobs join it with the config it passes.
CLUSTER = RUN.cluster
if workflow.is_main_process:
    # Ctrl-C cancels the running sleeves' Ray tasks at once; the hooks then stop the cluster.
    watch_interrupts()
    if not config.get("run_id"):
        pass_to_jobs({"run_id": RUN.run_id})
        print(f"run id: {RUN.run_id}  (run directory {RUN.run_dir})")
    if CLUSTER is not None and CLUSTER.address is not None and "ray_address" not in config:
        pass_to_jobs(CLUSTER.job_config())  # a cluster named by RAY_ADDRESS
    # Rule sleeve reserves ray_cpus: no more sleeves run at once than the cluster's CPUs
    # (a private cluster's are known before it starts; a named one is asked).
    if CLUSTER is not None and "ray_cpus" not in workflow.global_resources:
        try:
            workflow.register_resource("ray_cpus", CLUSTER.cpus())
        except PipelineError as exc:
            stages.report_at_exit(exc)  # the plain command's last line
            raise WorkflowError(str(exc)) from None

PLAN = RUN.plan
PROFILES = PLAN.risk_profiles
# What the resolved plan is made of: the params of rule resolved_manifest (serializing the
# plan itself would cost about a second per parse at 10,000 sleeves).
PLAN_SOURCE = json.dumps(
    {
        "profile": PLAN.profile,
        "risk_profiles": PROFILES,
        "manifest": PLAN.manifest_path,
        "manifest_sha256": PLAN.manifest_sha256,
        "execute_sleeves": RUN.execute_sleeves,
    },
    sort_keys=True,
)

def _alternation(paths):
    return "|".join(re.escape(str(RUN.node(p).dir)) for p in paths) or "(?!)"


META_NODES = _alternation([n.path for n in PLAN.meta_nodes()])
PINNED_NODES = _alternation([n.path for n in PLAN.atomic_nodes() if n.pin])
# A computed sleeve is any node below the run directory that is neither meta nor pinned.
# (A lookahead, not an alternation of every sleeve: thousands of sleeves stay cheap to match.)
SLEEVE_NODE_RE = (
    rf"(?!(?:{META_NODES}|{PINNED_NODES})/[^/]+$){re.escape(str(RUN.run_dir))}(?:/sleeves/[^/]+)*"
    if PLAN.root.is_meta
    else _alternation([PLAN.root.path])  # an atomic run: the root is its one sleeve
)
HIERARCHICAL_PROFILES = "|".join(p for p in PROFILES if p in stages.HIERARCHICAL) or "(?!)"
FLAT_PROFILES = "|".join(p for p in PROFILES if p not in stages.HIERARCHICAL) or "(?!)"


# Every node of the plan and its directory, built once: the functions below run once per
# job, so with thousands of sleeves each must cost microseconds (see docs/performance.md).
NODES = {path: RUN.node(path) for path in PLAN.nodes}
NODE_PATHS = {str(node.dir): path for path, node in NODES.items()}

# Building the DAG of thousands of jobs allocates millions of objects that live until the
# run ends, and CPython's cycle collector (run every 700 allocations) rescans them again and
# again: a quarter of a 10,000-sleeve dry run. Exempt what parsing built, and collect less
# often (docs/performance.md; the runner restores its caller's thresholds afterwards).
gc.freeze()
gc.set_threshold(50_000, 20, 20)


def node_path(wildcards):
    """Plan path ("." or "sleeves/a/...") of the {node} wildcard."""
    return NODE_PATHS.get(wildcards.node) or RUN.path_of(wildcards.node)


@functools.cache
def _sleeve_params(profile, pin):
    # Sleeves of one atomic profile share one resolved config: serialize it once. A skfolio
    # dataset ships inside skfolio, so its version pins the prices.
    spec = next(n for n in PLAN.atomic_nodes() if (n.profile, n.pin) == (profile, pin))
    dataset = deps.dataset_pin(spec.config["data"])
    return json.dumps({"config": spec.config, "profiles": PROFILES, "pin": pin, "dataset": dataset}, sort_keys=True)


@functools.cache
def _price_files(profile):
    spec = next(n for n in PLAN.atomic_nodes() if n.profile == profile)
    files = deps.price_files(spec.config["data"], spec.config["universe"].get("symbols"), RUN.base_dir)
    return [str(f) for f in files]


def get_sleeve_prices(wildcards):
    """The price files a computed sleeve reads (table and TradingView sources; none for skfolio)."""
    return _price_files(PLAN.nodes[node_path(wildcards)].profile)


def get_sleeve_params(wildcards):
    spec = PLAN.nodes[node_path(wildcards)]
    return _sleeve_params(spec.profile, spec.pin)


def get_sleeve_cpus(wildcards):
    return math.ceil(PLAN.nodes[node_path(wildcards)].config["backtest"].get("num_cpus", 1))


def get_pin_source(wildcards):
    try:
        return str(stages.pin_source(RUN, node_path(wildcards)).file("returns"))
    except PipelineError as exc:
        stages.report_at_exit(exc)
        raise WorkflowError(str(exc)) from None


def get_children_interface(wildcards):
    """Each child's returns, plus a nested child's flattened holdings of every profile.

    (An atomic child's holdings and health come from the same job as its returns.)
    """
    spec = PLAN.nodes[node_path(wildcards)]
    files = [str(NODES[c].file("returns")) for c in spec.children]
    for c in spec.children:
        if PLAN.nodes[c].is_meta:
            files += [str(NODES[c].file("flattened", profile=p)) for p in PROFILES]
    return files


def get_meta_params(wildcards):
    spec = PLAN.nodes[node_path(wildcards)]
    return json.dumps({k: spec.config[k] for k in ("meta_allocation", "backtest", "health")}, sort_keys=True)


def get_node_streams(wildcards):
    node = RUN.node(node_path(wildcards))
    return [str(node.file("meta_stream", profile=p)) for p in PROFILES]


def get_flatten_inputs(wildcards):
    path = node_path(wildcards)
    profile = wildcards.profile
    children = PLAN.nodes[path].children
    return [str(NODES[path].file("meta_weights", profile=profile))] + [
        str(stages.child_holdings_file(PLAN.nodes[c], NODES[c], profile)) for c in children
    ]


def get_risk_inputs(wildcards):
    return [str(p) for p in stages.risk_inputs(RUN, node_path(wildcards))]


def get_rebalance_book(wildcards):
    return str(stages.rebalance_source(RUN, wildcards.profile))


def get_rebalance_params(wildcards):
    return json.dumps(
        {"previous_run": RUN.previous_run, "holdings": RUN.holdings, **PLAN.root.config["frictions"]}, sort_keys=True
    )


def get_report_inputs(wildcards):
    return [str(p) for p in stages.report_inputs(RUN, node_path(wildcards))]


def get_final_targets():
    root = RUN.root
    targets = [root.file("resolved"), root.file("returns")]
    if PLAN.root.is_meta:
        targets += [root.file("flattened", profile=p) for p in PROFILES]
        for meta in PLAN.meta_nodes():  # every level is a run directory of its own, with its report
            node = RUN.node(meta.path)
            targets += [node.file("report_md"), node.file("report_html")]
            targets += [node.file("risk", profile=p) for p in PROFILES]
        if RUN.previous_run or RUN.holdings:
            targets += [root.file("rebalance", profile=p) for p in PROFILES]
    else:
        targets += stages.sleeve_outputs(RUN, root)
    return [str(t) for t in targets]


# Run directories whose lock start_run took (the runner takes it before Snakemake starts).
_LOCKED_HERE = []


def start_run():
    """Check pins and data sources, take the run's lock, then start the run's Ray cluster.

    onstart fires only when jobs will run (not on dry runs, lint or no-op reruns), so parsing
    the workflow stays free of pandas and Ray. Raises RunInProgressError when another live
    process runs the same run id. A private cluster starts only when a sleeve will be
    computed, after the checks and the lock (a refused run starts none). SIGTERM then stops
    the run like Ctrl-C (the scheduler, just started, set its own handler).
    """
    signals.sigterm_like_ctrl_c()
    try:
        if not RUN.execute_sleeves:
            stages.check_pins(PLAN, RUN.runs_root, RUN.run_id)
        stages.check_data(PLAN, RUN.base_dir, include_pinned=RUN.execute_sleeves)
        stages.check_rebalance(PLAN, RUN.runs_root, RUN.run_id, RUN.previous_run, RUN.holdings)
        if runlock.acquire(RUN.run_dir, RUN.run_id):
            _LOCKED_HERE.append(RUN.run_dir)
    except PipelineError as exc:
        stages.report_at_exit(exc)
        raise
    if (
        CLUSTER is not None
        and CLUSTER.address is None
        and any(job.rule.name == "sleeve" for job in workflow.dag.needrun_jobs())
    ):
        CLUSTER.start()
        pass_to_jobs(CLUSTER.job_config())


def finish_run(failed=False):
    """Stop (or leave) the run's Ray cluster and release a lock start_run took.

    Then the run's verdict: on failure, the root cause's one line (from the ledger) is the
    last line the command prints; on success, every recorded artifact must still match.
    """
    if CLUSTER is not None:
        CLUSTER.shutdown()
    try:
        error = stages.first_failure(RUN.run_dir, START_SEQ) if failed else None
        left = [] if failed else audit.damaged(RUN.run_dir)
        if left:
            error = PipelineError(f"{left[0].line(RUN.run_dir)}; rerun the same command to recompute it")
        stages.report_at_exit(error)
        if left:
            raise WorkflowError(str(error))
    finally:
        while _LOCKED_HERE:
            runlock.release(_LOCKED_HERE.pop(), discard_empty=True)
