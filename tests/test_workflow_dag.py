"""Dry-run DAG tests: canonical stage order, one flatten per risk profile, entry points agree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import PROJECT

STAGE_ORDER = ["sleeve", "meta_returns", "meta_optimize", "flatten", "report"]


def _stage(rule: str) -> str:
    return "meta_optimize" if rule.startswith("meta_optimize") else rule


def dry_jobs(profile: str, manifest, runs_root, run_id: str = "dryrun", **kw):
    result = MetaPipeline(
        profile, manifest=manifest, run_id=run_id, runs_root=runs_root, dry_run=True, forceall=True, **kw
    ).execute()
    return result.jobs


def test_meta_demo_dry_run_order(runs_root):
    jobs = dry_jobs("meta_demo", "config/manifest.json", runs_root)
    rules = [_stage(j.rule) for j in jobs]
    position = {stage: [i for i, r in enumerate(rules) if r == stage] for stage in STAGE_ORDER}
    assert len(position["sleeve"]) == 3
    assert len(position["flatten"]) == 4, "one flatten job per configured risk profile"
    assert len(position["meta_optimize"]) == 4
    assert len(position["meta_returns"]) == 1, "one meta_returns job writes every profile's file"
    for earlier, later in zip(STAGE_ORDER, STAGE_ORDER[1:], strict=False):
        assert max(position[earlier]) < min(position[later]), f"{earlier} must finish before {later}"
    # per profile: (the node's meta returns) -> optimize -> flatten
    for profile in ("equal_weight", "min_variance", "hrp", "risk_parity"):
        seq = [_stage(j.rule) for j in jobs if j.wildcards.get("profile") == profile]
        assert seq == ["meta_optimize", "flatten"]
    assert not (runs_root / "dryrun").exists(), "a dry run writes nothing"


def test_profiles_option_limits_the_fan_out(runs_root):
    jobs = dry_jobs("meta_demo", "config/manifest.json", runs_root, profiles="hrp,equal_weight")
    flattens = sorted(j.wildcards["profile"] for j in jobs if j.rule == "flatten")
    assert flattens == ["equal_weight", "hrp"]


def _script_jobs(script: str, run_id: str, manifest, runs_root) -> set[str]:
    out = subprocess.run(
        [sys.executable, f"scripts/{script}", "--profile", "meta_small", "--manifest", str(manifest),
         "--run-id", run_id, "--runs-root", str(runs_root), "--dry-run"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    ).stdout
    lines = [ln.strip() for ln in out.splitlines() if ln.startswith("  ")]
    assert lines, out
    return {ln.replace(run_id, "<run>") for ln in lines}


def test_both_scripts_schedule_the_same_jobs(small_manifest, runs_root):
    meta = _script_jobs("run_meta_pipeline.py", "run-a", small_manifest, runs_root)
    prod = _script_jobs("run_production_pipeline.py", "run-b", small_manifest, runs_root)
    assert meta == prod
    assert any(ln.startswith("flatten") for ln in meta) and any(ln.startswith("report") for ln in meta)


def test_atomic_profile_runs_one_sleeve(small_manifest, runs_root):
    jobs = dry_jobs("tech", small_manifest, runs_root)
    assert sorted(j.rule for j in jobs) == ["all", "resolved_manifest", "sleeve"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--profile", "meta_small", "--bogus"], "unrecognized arguments: --bogus"),
        (["--profile", ""], "profile is empty"),
        (["--profile", "meta_small", "--run-id", "../x"], "run id '../x' is not a safe name"),
        (["--profile", "meta_small", "--run-id", "/abs"], "run id '/abs' is not a safe name"),
        (["--profile", "meta_small", "--run-id", "a/b"], "run id 'a/b' is not a safe name"),
        (["--profile", "meta_small", "--run-id", "x" * 101], "is not a safe name"),
        (["--profile", "meta_small", "--profiles", "hrp,nope"], "unknown risk profile 'nope'"),
        (["--profile", "meta_two", "--profiles", "risk_parity"], "risk_parity not configured for profile 'meta_two'"),
        (["--profile", "tech"], "profile 'tech' is atomic"),
    ],
)
def test_cli_errors_are_one_line_exit_2(small_manifest, runs_root, argv, needle):
    proc = subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", *argv, "--manifest", str(small_manifest),
         "--runs-root", str(runs_root)],
        cwd=PROJECT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(runs_root.iterdir()) == []


def test_runner_restores_the_callers_gc_thresholds(runs_root):
    """The Snakefile tunes the GC for the DAG build; the runner's caller gets its settings back."""
    import gc

    before = gc.get_threshold()
    gc.set_threshold(1234, 11, 12)
    try:
        jobs = dry_jobs("meta_demo", "config/manifest.json", runs_root)
        assert jobs and gc.get_threshold() == (1234, 11, 12)
        assert gc.get_freeze_count() == 0, "what the DAG build froze is collectable again"
    finally:
        gc.set_threshold(*before)
