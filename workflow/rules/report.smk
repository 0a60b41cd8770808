# The run's record: the resolved manifest and the human-facing report of every meta node.
# The report's figures and tables are also registered for Snakemake's own report
# (`snakemake ... --report <file>.html`), each with a caption from workflow/report/.


report: "../report/workflow.rst"


rule resolved_manifest:
    output:
        resolved=artifact("resolved"),
    params:
        **get_params("resolved_manifest"),
    wildcard_constraints:
        node=W.root_node,
    log:
        artifact("log", stage="resolved_manifest"),
    run:
        run_step("resolved_manifest", wildcards, input, output, params, log)


rule report:
    input:
        unpack(get_inputs("report")),
    output:
        md=artifact("report_md"),
        html=report(artifact("report_html"), caption="../report/report.rst", category="1. Report", subcategory="{node}"),
        performance_table=report(artifact("report_table", asset="performance"), caption="../report/performance.rst", category="2. Performance", subcategory="{node}"),
        cumulative=report(artifact("report_figure", asset="cumulative"), caption="../report/cumulative.rst", category="2. Performance", subcategory="{node}"),
        drawdowns=report(artifact("report_figure", asset="drawdowns"), caption="../report/drawdowns.rst", category="2. Performance", subcategory="{node}"),
        sleeves=report(artifact("report_figure", asset="sleeves"), caption="../report/sleeves.rst", category="2. Performance", subcategory="{node}"),
        anomalies_table=report(artifact("report_table", asset="anomalies"), caption="../report/anomalies.rst", category="3. Anomalies", subcategory="{node}"),
        allocation_table=report(artifact("report_table", asset="allocation"), caption="../report/allocation_table.rst", category="4. Allocation", subcategory="{node}"),
        allocation=report(artifact("report_figure", asset="allocation"), caption="../report/allocation.rst", category="4. Allocation", subcategory="{node}"),
        diversification_table=report(artifact("report_table", asset="diversification"), caption="../report/diversification.rst", category="5. Diversification", subcategory="{node}"),
        correlation=report(artifact("report_figure", asset="correlation"), caption="../report/correlation.rst", category="5. Diversification", subcategory="{node}"),
        holdings_table=report(artifact("report_table", asset="holdings"), caption="../report/holdings.rst", category="6. Holdings", subcategory="{node}"),
        risk_table=report(artifact("report_table", asset="risk"), caption="../report/risk_table.rst", category="7. Risk", subcategory="{node}"),
        risk=report(artifact("report_figure", asset="risk"), caption="../report/risk.rst", category="7. Risk", subcategory="{node}"),
        changes=report(artifact("report_figure", asset="changes"), caption="../report/changes.rst", category="8. Rebalance", subcategory="{node}"),
    params:
        **get_params("report"),
    wildcard_constraints:
        node=W.meta_nodes,
    log:
        artifact("log", stage="report"),
    run:
        run_step("report", wildcards, input, output, params, log)
