# The run's record: the resolved manifest and the human-facing report of every meta node.
# The report's figures and tables are also registered for Snakemake's own report
# (`snakemake ... --report <file>.html`), each with a caption from workflow/report/.


report: "../report/workflow.rst"


rule resolved_manifest:
    output:
        RUN.root.file("resolved"),
    params:
        plan=W.plan_source,
        # The package code and library versions the rule runs: editing them reruns it.
        code=deps.code_hash("resolved_manifest"),
    log:
        str(RUN.root.file("log", stage="resolve")),
    run:
        stages.run_resolved(RUN, log[0])


rule report:
    input:
        get_report_inputs,
    output:
        md="{node}/report.md",
        html=report("{node}/report.html", caption="../report/report.rst", category="1. Report", subcategory="{node}"),
        performance=report("{node}/report_assets/performance.html", caption="../report/performance.rst", category="2. Performance", subcategory="{node}"),
        cumulative=report("{node}/report_assets/cumulative.png", caption="../report/cumulative.rst", category="2. Performance", subcategory="{node}"),
        drawdowns=report("{node}/report_assets/drawdowns.png", caption="../report/drawdowns.rst", category="2. Performance", subcategory="{node}"),
        sleeves=report("{node}/report_assets/sleeves.png", caption="../report/sleeves.rst", category="2. Performance", subcategory="{node}"),
        anomalies=report("{node}/report_assets/anomalies.html", caption="../report/anomalies.rst", category="3. Anomalies", subcategory="{node}"),
        allocation_table=report("{node}/report_assets/allocation.html", caption="../report/allocation_table.rst", category="4. Allocation", subcategory="{node}"),
        allocation=report("{node}/report_assets/allocation.png", caption="../report/allocation.rst", category="4. Allocation", subcategory="{node}"),
        diversification=report("{node}/report_assets/diversification.html", caption="../report/diversification.rst", category="5. Diversification", subcategory="{node}"),
        correlation=report("{node}/report_assets/correlation.png", caption="../report/correlation.rst", category="5. Diversification", subcategory="{node}"),
        holdings=report("{node}/report_assets/holdings.html", caption="../report/holdings.rst", category="6. Holdings", subcategory="{node}"),
        risk_table=report("{node}/report_assets/risk.html", caption="../report/risk_table.rst", category="7. Risk", subcategory="{node}"),
        risk=report("{node}/report_assets/risk.png", caption="../report/risk.rst", category="7. Risk", subcategory="{node}"),
        changes=report("{node}/report_assets/changes.png", caption="../report/changes.rst", category="8. Rebalance", subcategory="{node}"),
    params:
        # The package code and library versions the rule runs: editing them reruns it.
        code=deps.code_hash("report"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        "{node}/logs/report.log",
    run:
        stages.run_report(RUN, node_path(wildcards), log[0])
