# Where the risk sits, per meta node: ex-ante Euler risk contributions of the sleeves and of
# the physical positions on the last training window, and the sleeves' realised contributions
# to the out-of-sample stream. One job per node writes every risk profile's file: each
# atomic sleeve's prices load once.


rule risk:
    input:
        unpack(get_inputs("risk")),
    output:
        risk=[artifact("risk", profile=p) for p in PROFILES],
    params:
        **get_params("risk"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="risk"),
    run:
        run_step("risk", wildcards, input, output, params, log)
