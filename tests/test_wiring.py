"""The workflow's wiring (tradingview_scraper.rule_inputs): node patterns, and one rule per artifact."""

from __future__ import annotations

import inspect
import os
import re
from collections import Counter

import pytest

from tradingview_scraper import stages, steps
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.rule_inputs import alternation, computed_sleeve_pattern

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


def test_every_rule_runs_the_step_its_code_trigger_names(runs_root):
    """Each rule's ``code`` param is its step's (``steps.code``), derived from the table entry its ``run:``
    block hands to the adapter (as Snakemake parsed them), and the step has one name: its rule, its
    table entry, its ledger stage, its log file and its progress label."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

    from tradingview_scraper.orchestration.pipeline import SNAKEFILE
    from tradingview_scraper.orchestration.progress import Progress

    config = {"profile": "meta_small", "profiles": "equal_weight,hrp", "manifest": str(SMALL_MANIFEST), "run_id": "own",
              "runs_root": str(runs_root), "ray": False}  # fmt: skip
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf = api.workflow(snakefile=SNAKEFILE, workdir=PROJECT, resource_settings=ResourceSettings(cores=1),
                          config_settings=ConfigSettings(config=config))  # fmt: skip
        rules = {rule.name: rule for rule in wf._workflow.rules if rule.name != "all"}
    assert {"sleeve", "pinned_sleeve", "meta_returns", "meta_optimize", "meta_optimize_hierarchical", "node_returns",
            "flatten", "risk", "report", "rebalance", "resolved_manifest"} <= set(rules)  # fmt: skip
    assert {Progress._NAMES.get(name, name) for name in rules} == set(steps.STEPS), "one rule per step of the table"
    for name, rule in rules.items():
        code = rule.params.code
        assert isinstance(code, str) and "@" in code, f"rule {name} has no code hash"
        step = code.split("@")[0]
        calls = re.findall(r"\brun_step\(\"(\w+)\"", rule.run_func_src or "")
        assert calls == [step], f"rule {name}: its run block runs {calls}, its code hash names {step}"
        assert code == steps.code(step), name
        # One name per step (a ``use rule`` variant is the step it varies).
        assert step == Progress._NAMES.get(name, name), f"rule {name} runs step {step}"
        log = os.path.basename(str(rule.log[0]))
        assert re.fullmatch(rf"{step}(_{{profile[^}}]*}})?\.log", log), f"rule {name} logs to {log}"


def test_a_step_takes_its_inputs_and_the_job_by_name():
    """The adapter calls a step's function with its named inputs and what it asks of the job:
    every parameter is one or the other, and every input the step reads is a parameter."""
    from tradingview_scraper import steps
    from tradingview_scraper.run import RunContext
    from tradingview_scraper.stages._step import Job

    job = set(vars(Job(RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "j"}), ".", "hrp")))
    for entry in steps.STEPS.values():
        params = set(inspect.signature(entry.load()).parameters)
        read = {k for k, spec in entry.inputs.items() if getattr(spec, "read", True)}
        assert read <= params and params <= read | job, (entry.name, params - read - job, read - params)


# ----------------------------------------------------------------------------- a stage works on what its rule declares


def _declared(result) -> dict[str, tuple[set[str], set[str]]]:
    """Each job's declared (inputs, outputs), by its log file (every rule has one)."""
    real = os.path.realpath
    return {real(job.logs[0]): ({real(f) for f in job.inputs}, {real(f) for f in job.outputs}) for job in result.jobs if job.logs}


@pytest.mark.e2e
def test_every_stage_reads_only_what_its_rule_gives_and_writes_only_what_it_declares(tmp_path):
    """Nested meta nodes, a pinned sleeve and a rebalance: every stage's reads and writes (through
    layout), against the inputs and outputs its job declares in the DAG."""
    real = os.path.realpath
    kw = dict(manifest=SMALL_MANIFEST, profiles="equal_weight,hrp", runs_root=tmp_path)
    MetaPipeline("tech", run_id="tech-old", ray=False, **kw).execute()
    runs = [("meta_deep", {"run_id": "deep"}), ("meta_pinned", {"run_id": "pinned", "previous_run": "deep"})]
    seen: list[stages.StageIO] = []
    for profile, opts in runs:
        declared = _declared(MetaPipeline(profile, dry_run=True, forceall=True, **kw, **opts).execute())
        before = len(seen)
        with stages.watch(seen.append):
            MetaPipeline(profile, ray=False, **kw, **opts).execute()
        assert len(seen) - before == len(declared), "one stage per job"
        for io in seen[before:]:
            inputs, outputs = declared[real(io.log)]
            who = f"{io.stage} {io.node}"
            assert {real(f) for f in io.inputs} <= inputs, (who, {real(f) for f in io.inputs} - inputs)
            assert {real(f) for f in io.outputs} == outputs, (who, {real(f) for f in io.outputs} ^ outputs)
            assert {real(f) for f in io.reads} <= {real(f) for f in io.inputs}, (who, set(io.reads) - set(io.inputs))
            assert {real(f) for f in io.writes} <= outputs, (who, set(io.writes) - outputs)
    kinds = {io.stage for io in seen}
    assert {"sleeve", "pinned_sleeve", "meta_returns", "meta_optimize", "flatten", "risk", "report", "rebalance"} <= kinds, kinds
    assert all(io.reads for io in seen if io.stage not in ("sleeve", "resolved_manifest")) and all(io.writes for io in seen)


def test_a_stage_reports_what_it_read_and_wrote(runs_root):
    """The seam the test above relies on: every read and write a stage makes shows in its ``StageIO``."""
    from tradingview_scraper.layout import read_json, write_json
    from tradingview_scraper.run import RunContext

    ctx = RunContext.from_config(
        {"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "seam", "runs_root": str(runs_root), "ray": False}
    )
    node = ctx.root
    weights = {"meta_profile": "meta_small", "weights": {"tech": 0.5, "staples": 0.3, "factors": 0.2}}
    write_json(node.file("meta_weights", profile="hrp"), weights)
    for sid in ("tech", "staples", "factors"):
        write_json(node.child(sid).file("weights", profile="hrp"), {"weights": [{"symbol": sid.upper(), "direction": "LONG", "weight": 1.0, "net_weight": 1.0}]})
    files = {"meta_weights": str(node.file("meta_weights", profile="hrp"))}
    files |= {stages.child_input("holdings", s): str(node.child(s).file("weights", profile="hrp")) for s in ("tech", "staples", "factors")}
    out = str(node.file("flattened", profile="hrp"))
    seen: list[stages.StageIO] = []
    with stages.watch(seen.append):
        stages.run_step(steps.step("flatten"), ctx, ".", "hrp", input=files, output={"flattened": out})
        read_json(files["meta_weights"])  # outside any stage: nobody's read
    (io,) = seen
    assert io.stage == "flatten" and sorted(io.reads) == sorted(files.values()) and io.writes == [out]
    assert sorted(io.inputs) == sorted(files.values()) and io.outputs == [out]
    with pytest.raises(KeyError, match="holdings:factors"):  # a child's file the rule did not give
        stages.run_step(steps.step("flatten"), ctx, ".", "hrp", input={k: v for k, v in files.items() if "factors" not in k}, output={"flattened": out})


# ----------------------------------------------------------------------------- the plan: resolved and checked once


def _counting(monkeypatch, module, name: str, calls: Counter) -> None:
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_the_runner_resolves_the_plan_once(monkeypatch, runs_root):
    """The Snakefile the runner drives takes the runner's plan (run.handed_over) instead of resolving it again."""
    from tradingview_scraper import manifest

    calls = Counter()
    _counting(monkeypatch, manifest, "resolve", calls)
    _counting(monkeypatch, stages, "preflight", calls)
    result = MetaPipeline("meta_deep", manifest=SMALL_MANIFEST, run_id="once", runs_root=runs_root, dry_run=True).execute()
    assert result.jobs and calls == {"resolve": 1, "preflight": 1}


def test_the_workflow_checks_a_run_the_runner_did_not(monkeypatch, runs_root, small_manifest_dict, write_manifest):
    """The workflow takes the owner its runner hands over (checked once); without one it makes and checks its own."""
    from tradingview_scraper.owner import RunOwner
    from tradingview_scraper.run import RunContext

    path = write_manifest(small_manifest_dict)
    config = {"profile": "meta_small", "manifest": str(path), "run_id": "w", "runs_root": str(runs_root), "ray": False}
    calls = Counter()
    _counting(monkeypatch, stages, "preflight", calls)

    def started(cfg) -> RunOwner:
        owner = RunOwner.for_workflow(cfg, pass_to_jobs=lambda settings: None)
        owner.start(sleeves_to_compute=False)
        assert owner.finish() is None
        return owner

    plain = started(config)  # the plain snakemake command: resolved and checked here, released at its end
    assert calls["preflight"] == 1 and not plain.claimed
    runner = RunOwner(RunContext.from_config(config))
    runner.preflight()
    with runner.handed():
        assert started(config) is runner and calls["preflight"] == 2  # the runner's checks are not repeated
        assert runner.claimed  # the runner releases its own owner
        assert started({**config, "run_id": "other"}) is not runner  # another run is not this hand-off
    runner.release()
    assert started(config) is not runner and calls["preflight"] == 4  # the hand-off ends with the runner's block


@pytest.mark.e2e
def test_a_real_run_through_the_runner_checks_once_and_plain_snakemake_checks_itself(monkeypatch, tmp_path):
    import subprocess
    import sys

    from tradingview_scraper import audit, manifest

    calls = Counter()
    _counting(monkeypatch, manifest, "resolve", calls)
    _counting(monkeypatch, stages, "preflight", calls)
    _counting(monkeypatch, audit, "damaged", calls)
    book = tmp_path / "book.csv"
    book.write_text("symbol,direction,weight\nAAPL,LONG,0.6\nKO,LONG,0.4\n")
    kw = dict(manifest=SMALL_MANIFEST, profiles="equal_weight,hrp", runs_root=tmp_path / "runs", holdings=str(book))
    run = MetaPipeline("meta_two", run_id="once", ray=False, **kw).execute()
    # One owner: the artifacts are verified once when it claims the run and once for its verdict.
    assert calls == {"resolve": 1, "preflight": 1, "damaged": 2}
    assert {"sleeve", "rebalance", "report"} <= {j.rule for j in run.jobs} and (run.run_dir / "rebalance_hrp.json").is_file()
    # The plain command has no runner: its onstart checks the book (a bad row) before any job runs.
    book.write_text("symbol,direction,weight\nAAPL,LONG,0.6\nKO,LONG,x\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "1", "--config", "profile=meta_two",
           "run_id=plain", f"manifest={SMALL_MANIFEST}", f"runs_root={tmp_path / 'runs'}", f"holdings={book}", "ray=false"]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and last.startswith("error: ") and "line 3" in last and "'x'" in last, proc.stderr[-2000:]
    assert not (tmp_path / "runs" / "plain" / "returns.parquet").exists()


def test_the_content_param_hashes_every_file_a_steps_outside_sources_name(tmp_path, monkeypatch):
    """A step's ``content`` param is derived from its ``Outside`` inputs: it hashes exactly the files their
    sources name, one the rule cannot declare (a braced holdings file) included, and follows its bytes."""
    from pathlib import Path

    from tradingview_scraper import deps
    from tradingview_scraper.manifest import load_plan
    from tradingview_scraper.rule_inputs import Wiring, _paths
    from tradingview_scraper.run import RunContext

    monkeypatch.chdir(PROJECT)
    book = tmp_path / "book {profile}.csv"
    book.write_text("symbol,direction,quantity\nSPY,LONG,3\n")  # a quantity book is valued at the prices
    plan = load_plan("meta_custom", PROJECT / "config" / "manifest.json")
    ctx = RunContext(plan=plan, run_id="r", runs_root=tmp_path / "runs", base_dir=Path("."), holdings=str(book))
    hashed: list[str] = []
    file_digest = deps.file_digest
    monkeypatch.setattr(deps, "file_digest", lambda path, known=None: hashed.append(str(path)) or file_digest(path, known))
    jobs = [(n.path, None, "external_sleeve" if n.kind == "external" else "sleeve") for n in plan.atomic_nodes()]
    jobs += [(".", None, "risk"), (".", plan.risk_profiles[0], "rebalance")]
    for path, profile, name in jobs:
        wiring, node_dir = Wiring(ctx), str(ctx.node(path).dir)  # a new one: nothing hashed before
        sources = [spec.source for spec in steps.step(name).inputs.values() if isinstance(spec, steps.Outside)]
        named = {f for source in sources for f in _paths(getattr(wiring, source)(node_dir, profile))}
        hashed.clear()
        assert steps.CONTENT in steps.rule_params(name), name
        digest = wiring.param(name, steps.CONTENT, node_dir, profile)
        assert set(hashed) == named and (named or name == "sleeve"), (name, path)  # its sleeves read skfolio's data
        if name == "rebalance":
            assert str(book) in named and wiring.inputs(name, node_dir, profile)["current"] == []  # not declared
            assert len(named) >= 2  # the book and the prices it is valued at
            book.write_text("symbol,direction,quantity\nSPY,LONG,4\n")
            assert Wiring(ctx).param(name, steps.CONTENT, node_dir, profile) != digest
