# The meta layer of every meta node (the root and nested meta sleeves), per risk profile:
# meta returns (common dates, compounded between them) -> meta optimize (walk-forward, bounded) -> flatten.
# One meta_returns job per node writes every profile's file: it reads each child's returns
# once (not once per profile), and the DAG has one edge per child instead of one per
# child and profile.


wildcard_constraints:
    profile="|".join(PROFILES),


rule meta_returns:
    input:
        unpack(get_children_interface),
    output:
        returns=[artifact("meta_returns", profile=p) for p in PROFILES],
    params:
        meta=get_meta_params,
        # The package code its stage function reaches and those libraries' versions: editing them reruns it.
        code=codehash.code_hash(stages.run_meta_returns),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="meta_returns"),
    run:
        stages.run_meta_returns(RUN, node_path(wildcards), input=input, output=output, log=log[0])


rule meta_optimize:
    input:
        returns=artifact("meta_returns"),
    output:
        weights=artifact("meta_weights"),
        stream=artifact("meta_stream"),
    params:
        meta=get_meta_params,
        # The package code its stage function reaches and those libraries' versions: editing them reruns it.
        code=codehash.code_hash(stages.run_meta_optimize),
    wildcard_constraints:
        node=W.meta_nodes,
        profile=W.flat_profiles,
    log:
        artifact("log", stage="meta_optimize_{profile}"),
    run:
        stages.run_meta_optimize(RUN, node_path(wildcards), wildcards.profile, input=input, output=output, log=log[0])


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
        streams=get_node_streams,
    output:
        returns=artifact("returns"),
    params:
        # The package code its stage function reaches and those libraries' versions: editing them reruns it.
        code=codehash.code_hash(stages.run_node_returns),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="node_returns"),
    run:
        stages.run_node_returns(RUN, node_path(wildcards), input=input, output=output, log=log[0])


rule flatten:
    input:
        unpack(get_flatten_inputs),
    output:
        flattened=artifact("flattened"),
    params:
        # The package code its stage function reaches and those libraries' versions: editing them reruns it.
        code=codehash.code_hash(stages.run_flatten),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="flatten_{profile}"),
    run:
        stages.run_flatten(RUN, node_path(wildcards), wildcards.profile, input=input, output=output, log=log[0])
