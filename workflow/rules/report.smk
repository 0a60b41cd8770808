# The run's record: the resolved manifest and the human-facing report.


rule resolved_manifest:
    output:
        RUN.root.file("resolved"),
    params:
        plan=json.dumps(PLAN.to_dict(), sort_keys=True),
    log:
        str(RUN.root.file("log", stage="resolve")),
    run:
        stages.run_resolved(RUN, log[0])


rule report:
    input:
        get_report_inputs,
    output:
        md="{node}/report.md",
        html="{node}/report.html",
    wildcard_constraints:
        node=META_NODES,
    log:
        "{node}/logs/report.log",
    run:
        stages.run_report(RUN, node_path(wildcards), log[0])
