# The trades from the current book (a previous run, or a holdings file) to the root's
# flattened weights, per risk profile. The book is an input: a changed holdings file reruns
# only the rebalance (and the report that shows it). Its files are reached through {node}
# (the run directory), whose value Snakemake takes literally, braces and all.


rule rebalance:
    input:
        unpack(get_inputs("rebalance")),
    output:
        rebalance=artifact("rebalance"),
    params:
        **get_params("rebalance"),
    wildcard_constraints:
        node=W.root_node,
    log:
        artifact("log", stage="rebalance_{profile}"),
    run:
        run_step("rebalance", wildcards, input, output, params, log)


# The orders of the traded book (a root meta profile with trading settings): a view of the
# rebalance's file, so a changed book or trading setting reruns it after the rebalance.
rule orders:
    input:
        unpack(get_inputs("orders")),
    output:
        orders=artifact("orders"),
    params:
        **get_params("orders"),
    wildcard_constraints:
        node=W.root_node,
    log:
        artifact("log", stage="orders_{profile}"),
    run:
        run_step("orders", wildcards, input, output, params, log)
