# Atomic sleeves: computed (on Ray, or in-process with ray=false) or copied from a pinned run.


rule sleeve:
    output:
        returns="{node}/returns.parquet",
        health="{node}/health.json",
        sign_test="{node}/sign_test.json",
        provenance="{node}/provenance.json",
        weights=expand("{{node}}/weights_{profile}.json", profile=PROFILES),
    params:
        sleeve=get_sleeve_params,
    resources:
        ray_cpus=get_sleeve_cpus,
    wildcard_constraints:
        node=SLEEVE_NODE_RE,
    log:
        "{node}/logs/sleeve.log",
    benchmark:
        "{node}/logs/sleeve.benchmark.tsv"
    run:
        stages.run_sleeve(RUN, node_path(wildcards), log[0])


rule pinned_sleeve:
    input:
        source=get_pin_source,
    output:
        returns="{node}/returns.parquet",
        health="{node}/health.json",
        sign_test="{node}/sign_test.json",
        provenance="{node}/provenance.json",
        weights=expand("{{node}}/weights_{profile}.json", profile=PROFILES),
    params:
        sleeve=get_sleeve_params,
    wildcard_constraints:
        node=PINNED_NODES,
    log:
        "{node}/logs/pin.log",
    run:
        stages.run_pin(RUN, node_path(wildcards), log[0])
