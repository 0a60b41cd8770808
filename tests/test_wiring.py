"""The workflow's wiring (tradingview_scraper.wiring): node patterns, and one rule per artifact."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.wiring import alternation, computed_sleeve_pattern

from .conftest import PROJECT, SMALL_MANIFEST

RUN = "/runs/r"
META = [RUN, f"{RUN}/sleeves/branch"]
PINNED = [f"{RUN}/sleeves/old"]


@pytest.mark.parametrize(
    "path, sleeve",
    [
        (f"{RUN}/sleeves/tech/returns.parquet", "sleeves/tech"),
        (f"{RUN}/sleeves/branch/sleeves/leaf/weights_hrp.json", "sleeves/branch/sleeves/leaf"),
        (f"{RUN}/sleeves/tech/deeper/folder/file.json", "sleeves/tech"),  # an output in a subfolder
        (f"{RUN}/returns.parquet", None),  # the meta root
        (f"{RUN}/meta/returns_hrp.parquet", None),
        (f"{RUN}/sleeves/branch/returns.parquet", None),  # a nested meta node
        (f"{RUN}/sleeves/branch/x/y/returns.parquet", None),  # ... whatever its output's path
        (f"{RUN}/sleeves/old/returns.parquet", None),  # a pinned sleeve
        (f"{RUN}/sleeves/old/sub/returns.parquet", None),
        ("/elsewhere/sleeves/tech/returns.parquet", None),
    ],
)
def test_computed_sleeve_pattern_matches_only_computed_sleeves(path, sleeve):
    node = computed_sleeve_pattern(RUN, META + PINNED)
    # As Snakemake matches an output "{node}/<file below it>": each split of the path at a '/'
    # (the rest never holds a child's sleeves/ folder) whose head the pattern takes as a node.
    heads = [path[:i] for i, c in enumerate(path) if c == "/" and "/sleeves/" not in path[i:]]
    nodes = [h for h in heads if re.fullmatch(node, h)]
    assert nodes == ([f"{RUN}/{sleeve}"] if sleeve else []), path


def test_alternation_matches_exactly_its_directories():
    pattern = alternation(META)
    assert re.fullmatch(pattern, RUN) and re.fullmatch(pattern, f"{RUN}/sleeves/branch")
    assert not re.fullmatch(pattern, f"{RUN}/sleeves/tech") and re.fullmatch(alternation([]), "x") is None


def _outputs(result) -> Counter:
    return Counter(out for job in result.jobs for out in job.outputs)


def test_every_artifact_has_exactly_one_rule_in_the_dag(runs_root):
    result = MetaPipeline(
        "meta_deep", manifest=SMALL_MANIFEST, run_id="own", runs_root=runs_root, dry_run=True, forceall=True
    ).execute()
    outputs = _outputs(result)
    assert outputs and max(outputs.values()) == 1, [o for o, n in outputs.items() if n > 1]


@pytest.mark.e2e
def test_every_file_a_run_writes_is_one_rules_output(tmp_path):
    kw = dict(manifest=SMALL_MANIFEST, profiles="equal_weight,hrp", run_id="own", runs_root=tmp_path)
    planned = _outputs(MetaPipeline("meta_deep", dry_run=True, forceall=True, **kw).execute())
    run = MetaPipeline("meta_deep", ray=False, **kw).execute()
    written = {
        str(p)
        for p in run.run_dir.rglob("*")
        if p.is_file() and "logs" not in p.relative_to(run.run_dir).parts and p.name not in {"audit.jsonl", "audit.jsonl.lock", ".run.lock"}
    }
    assert written and written == set(planned), sorted(written ^ set(planned))


def test_every_rule_carries_its_code_hash():
    """A rule without ``code=deps.code_hash(<rule>)`` would not rerun when its code changes."""
    from tradingview_scraper import deps, stages

    rules = {}
    for smk in sorted((PROJECT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|use rule) )", smk.read_text()):
            head = re.match(r"(?:rule (\w+)|use rule \w+ as (\w+) with):", block)
            if head:
                rules[head.group(1) or head.group(2)] = block
    assert {"sleeve", "meta_returns", "report", "risk", "rebalance"} <= set(rules)
    for name, block in rules.items():
        if name.endswith("_hierarchical"):  # `use rule ... with` keeps the parent's params
            continue
        assert f'code=deps.code_hash("{name}")' in block, f"rule {name} has no code hash"
        assert name in deps.STAGE_CODE and name in deps.STAGE_LIBRARIES, name
        # its hash counts the stages module its run block calls
        call = re.search(r"\n    run:\n\s+stages\.(\w+)\(", block)
        assert call and getattr(stages, call[1]).__module__ == f"tradingview_scraper.{deps.STAGE_ENTRY[name]}", name
