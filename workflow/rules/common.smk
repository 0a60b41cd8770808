# Every Python helper of the workflow: config validation, the run context, wildcard
# constraints and the input functions (get_<noun>). Imports stay light: the package's
# heavy modules (pandas, skfolio, ray) load inside the stage functions.

import json
import re

from snakemake.utils import validate

from tradingview_scraper import stages
from tradingview_scraper.errors import PipelineError
from tradingview_scraper.orchestration.compute import shutdown_all
from tradingview_scraper.run import RunContext


validate(config, schema="../schemas/config.schema.yaml")

try:
    RUN = RunContext.from_config(config)
except PipelineError as exc:
    raise WorkflowError(str(exc)) from None

PLAN = RUN.plan
PROFILES = PLAN.risk_profiles
if not config.get("run_id"):
    print(f"run id: {RUN.run_id}  (run directory {RUN.run_dir})")


def _alternation(paths):
    return "|".join(re.escape(str(RUN.node(p).dir)) for p in paths) or "(?!)"


META_NODES = _alternation([n.path for n in PLAN.meta_nodes()])
PINNED_NODES = _alternation([n.path for n in PLAN.atomic_nodes() if n.pin])
COMPUTED_NODES = _alternation([n.path for n in PLAN.atomic_nodes() if not n.pin])
# A computed sleeve is any node below the run directory that is neither meta nor pinned.
# (A lookahead, not an alternation of every sleeve: thousands of sleeves stay cheap to match.)
SLEEVE_NODE_RE = (
    rf"(?!(?:{META_NODES}|{PINNED_NODES})/[^/]+$){re.escape(str(RUN.run_dir))}(?:/sleeves/[^/]+)*"
    if PLAN.root.is_meta
    else COMPUTED_NODES
)
HIERARCHICAL_PROFILES = "|".join(p for p in PROFILES if p in stages.HIERARCHICAL) or "(?!)"
FLAT_PROFILES = "|".join(p for p in PROFILES if p not in stages.HIERARCHICAL) or "(?!)"


def node_path(wildcards):
    """Plan path ("." or "sleeves/a/...") of the {node} wildcard."""
    return RUN.path_of(wildcards.node)


def get_sleeve_params(wildcards):
    spec = PLAN.nodes[node_path(wildcards)]
    return json.dumps({"config": spec.config, "profiles": PROFILES, "pin": spec.pin}, sort_keys=True)


def get_sleeve_cpus(wildcards):
    return int(PLAN.nodes[node_path(wildcards)].config["backtest"].get("num_cpus", 1))


def get_pin_source(wildcards):
    return str(stages.pin_source(RUN, node_path(wildcards)).file("returns"))


def get_children_interface(wildcards):
    """Each child's returns, plus a nested child's flattened holdings for this profile.

    (An atomic child's holdings and health come from the same job as its returns.)
    """
    spec = PLAN.nodes[node_path(wildcards)]
    files = [str(RUN.node(c).file("returns")) for c in spec.children]
    files += [str(RUN.node(c).file("flattened", profile=wildcards.profile)) for c in spec.children if PLAN.nodes[c].is_meta]
    return files


def get_meta_params(wildcards):
    spec = PLAN.nodes[node_path(wildcards)]
    return json.dumps({k: spec.config[k] for k in ("meta_allocation", "backtest", "health")}, sort_keys=True)


def get_node_streams(wildcards):
    node = RUN.node(node_path(wildcards))
    return [str(node.file("meta_stream", profile=p)) for p in PROFILES]


def get_flatten_inputs(wildcards):
    path = node_path(wildcards)
    node = RUN.node(path)
    children = PLAN.nodes[path].children
    return [str(node.file("meta_weights", profile=wildcards.profile))] + [
        str(stages.child_holdings_file(RUN, c, wildcards.profile)) for c in children
    ]


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
    else:
        targets += stages.sleeve_outputs(RUN, root)
    return [str(t) for t in targets]


def finish_run():
    """Stop the run's private Ray cluster (if one was started)."""
    shutdown_all()
