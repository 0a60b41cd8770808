# The meta layer of every meta node (the root and nested meta sleeves), per risk profile:
# meta returns (common dates, compounded between them) -> meta optimize (walk-forward, bounded) -> flatten.
# One meta_returns job per node writes every profile's file: it reads each child's returns
# once (not once per profile), and the DAG has one edge per child instead of one per
# child and profile.


wildcard_constraints:
    profile="|".join(PROFILES),


rule meta_returns:
    input:
        unpack(get_inputs("meta_returns")),
    output:
        returns=[artifact("meta_returns", profile=p) for p in PROFILES],
    params:
        **get_params("meta_returns"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="meta_returns"),
    run:
        run_step("meta_returns", wildcards, input, output, params, log)


rule meta_optimize:
    input:
        unpack(get_inputs("meta_optimize")),
    output:
        weights=artifact("meta_weights"),
        stream=artifact("meta_stream"),
    params:
        **get_params("meta_optimize"),
    wildcard_constraints:
        node=W.meta_nodes,
        profile=W.flat_profiles,
    log:
        artifact("log", stage="meta_optimize_{profile}"),
    run:
        run_step("meta_optimize", wildcards, input, output, params, log)


use rule meta_optimize as meta_optimize_hierarchical with:
    output:
        weights=artifact("meta_weights"),
        stream=artifact("meta_stream"),
        tree=artifact("cluster_tree"),
    wildcard_constraints:
        node=W.meta_nodes,
        profile=W.hierarchical_profiles,


rule node_returns:
    input:
        unpack(get_inputs("node_returns")),
    output:
        returns=artifact("returns"),
    params:
        **get_params("node_returns"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="node_returns"),
    run:
        run_step("node_returns", wildcards, input, output, params, log)


rule flatten:
    input:
        unpack(get_inputs("flatten")),
    output:
        flattened=artifact("flattened"),
    params:
        **get_params("flatten"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="flatten_{profile}"),
    run:
        run_step("flatten", wildcards, input, output, params, log)
