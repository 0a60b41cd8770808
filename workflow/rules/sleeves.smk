# Atomic sleeves: computed (on Ray, or in-process with ray=false), copied from a pinned run or read from external files.
# Each kind writes the sleeve interface every node exposes.
SLEEVE_INTERFACE = dict(
    returns=artifact("returns"),
    health=artifact("health"),
    sign_test=artifact("sign_test"),
    provenance=artifact("provenance"),
    weights=[artifact("weights", profile=p) for p in PROFILES],
)


rule sleeve:
    input:
        unpack(get_inputs("sleeve")),
    output:
        **SLEEVE_INTERFACE,
    params:
        **get_params("sleeve"),
    resources:
        ray_cpus=get_sleeve_cpus,
    wildcard_constraints:
        node=W.sleeve_nodes,
    log:
        artifact("log", stage="sleeve"),
    run:
        run_step("sleeve", wildcards, input, output, params, log)


rule pinned_sleeve:
    input:
        unpack(get_inputs("pinned_sleeve")),
    output:
        **SLEEVE_INTERFACE,
    params:
        **get_params("pinned_sleeve"),
    wildcard_constraints:
        node=W.pinned_nodes,
    log:
        artifact("log", stage="pinned_sleeve"),
    run:
        run_step("pinned_sleeve", wildcards, input, output, params, log)


# External sleeves (issue 22): a strategy run elsewhere, read from its returns and holdings files.
rule external_sleeve:
    input:
        unpack(get_inputs("external_sleeve")),
    output:
        **SLEEVE_INTERFACE,
    params:
        **get_params("external_sleeve"),
    wildcard_constraints:
        node=W.external_nodes,
    log:
        artifact("log", stage="external_sleeve"),
    run:
        run_step("external_sleeve", wildcards, input, output, params, log)
