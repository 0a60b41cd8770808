# Atomic sleeves: computed (on Ray, or in-process with ray=false) or copied from a pinned run.


rule sleeve:
    input:
        unpack(get_inputs("sleeve")),
    output:
        returns=artifact("returns"),
        health=artifact("health"),
        sign_test=artifact("sign_test"),
        provenance=artifact("provenance"),
        weights=[artifact("weights", profile=p) for p in PROFILES],
    params:
        **get_params("sleeve"),
    resources:
        ray_cpus=get_sleeve_cpus,
    wildcard_constraints:
        node=W.sleeve_nodes,
    log:
        artifact("log", stage="sleeve"),
    run:
        run_step("sleeve", wildcards, input, output, log)


rule pinned_sleeve:
    input:
        unpack(get_inputs("pinned_sleeve")),
    output:
        returns=artifact("returns"),
        health=artifact("health"),
        sign_test=artifact("sign_test"),
        provenance=artifact("provenance"),
        weights=[artifact("weights", profile=p) for p in PROFILES],
    params:
        **get_params("pinned_sleeve"),
    wildcard_constraints:
        node=W.pinned_nodes,
    log:
        artifact("log", stage="pinned_sleeve"),
    run:
        run_step("pinned_sleeve", wildcards, input, output, log)
