"""Pinned sleeves: reuse of an earlier run's sleeve, checked before any work starts."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import audit
from tradingview_scraper.errors import DataError
from tradingview_scraper.manifest import load_plan
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.run import RunContext
from tradingview_scraper.stages import check_pins, resolve_pin

from .conftest import PROJECT, SMALL_MANIFEST

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

PROFILES = ["equal_weight", "hrp"]
COPIED = ["health.json", "sign_test.json", *(f"weights_{p}.json" for p in PROFILES)]


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """A standalone run of atomic profile 'tech' (run id tech-old), then meta_pinned reusing it."""
    root = tmp_path_factory.mktemp("runs")
    MetaPipeline("tech", manifest=SMALL_MANIFEST, run_id="tech-old", runs_root=root, ray=False,
                 profiles=PROFILES).execute()
    MetaPipeline("meta_pinned", manifest=SMALL_MANIFEST, run_id="new", runs_root=root, ray=False).execute()
    return root


def _manifest(small_manifest_dict, **sleeve_pins):
    """The small manifest with meta_pinned's sleeves pinned as given (sleeve id -> run id)."""
    m = copy.deepcopy(small_manifest_dict)
    for sleeve in m["profiles"]["meta_pinned"]["sleeves"]:
        sleeve.pop("run_id", None)
        if sleeve["id"] in sleeve_pins:
            sleeve["run_id"] = sleeve_pins[sleeve["id"]]
    return m


def _plan(m, write_manifest, name="m.json"):
    return load_plan("meta_pinned", write_manifest(m, name))


def test_standalone_run_is_reused_with_provenance(pinned):
    src, dst = pinned / "tech-old", pinned / "new" / "sleeves" / "tech"
    for name in COPIED:
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(dst / "returns.parquet"), pd.read_parquet(src / "returns.parquet"))
    prov = json.loads((dst / "provenance.json").read_text())
    assert prov["computed"] is False and prov["pinned_run_id"] == "tech-old"
    assert prov["source"] == str(src) and prov["source_profile"] == "tech"
    assert prov["source_config"]["backtest"]["train_window"] == 126
    assert prov["source_provenance"]["computed"] is True and prov["source_provenance"]["run_id"] == "tech-old"
    assert prov["source_manifest_sha256"] == json.loads((src / "manifest.resolved.json").read_text())["manifest_sha256"]
    assert prov["sha256"]["health.json"] == audit.file_sha256(src / "health.json")
    staples = json.loads((pinned / "new/sleeves/staples/provenance.json").read_text())
    assert staples["computed"] is True
    for p in PROFILES:
        flat = json.loads((pinned / f"new/flattened_{p}.json").read_text())
        assert set(flat["sleeve_weights"]) == {"tech", "staples"}
    stages = [json.loads(line).get("stage") for line in (pinned / "new/audit.jsonl").read_text().splitlines()]
    assert "pinned_sleeve" in stages and audit.verify(pinned / "new") == []


def test_sleeve_of_a_meta_run_is_reused(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, staples="new")
    plan = _plan(m, write_manifest)
    src, info = resolve_pin(plan.nodes["sleeves/staples"], pinned, PROFILES)
    assert src.dir == pinned / "new" / "sleeves" / "staples" and info["profile"] == "staples"


def _error(plan, root, run_id="next"):
    with pytest.raises(DataError) as err:
        check_pins(plan, root, run_id)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unresolved_pin_names_sleeve_and_paths(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, tech="nowhere")
    msg = _error(_plan(m, write_manifest), pinned)
    assert "sleeve 'tech'" in msg and "'nowhere'" in msg
    assert str(pinned / "nowhere" / "sleeves" / "tech") in msg and str(pinned / "nowhere") in msg


def test_unresolved_pin_fails_before_any_work(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, tech="nowhere")
    path = write_manifest(m, "cli.json")
    before = sorted(p.name for p in pinned.iterdir())
    proc = subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", "--profile", "meta_pinned", "--manifest", str(path),
         "--run-id", "never", "--runs-root", str(pinned)],
        cwd=PROJECT, capture_output=True, text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sleeve 'tech': pinned run_id 'nowhere' not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in pinned.iterdir()) == before, "nothing may be written"


def test_pin_of_another_profiles_run(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, staples="tech-old")
    msg = _error(_plan(m, write_manifest), pinned)
    assert "sleeve 'staples'" in msg and "is a run of profile 'tech', not 'staples'" in msg


def test_pin_of_a_meta_run_without_that_sleeve(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, staples="new")
    m["profiles"]["meta_pinned"]["sleeves"][1]["id"] = "staples2"
    msg = _error(_plan(m, write_manifest), pinned)
    assert "sleeve 'staples2'" in msg and "not found" in msg


def test_incomplete_pinned_run(pinned, small_manifest_dict, write_manifest, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(pinned / "tech-old", root / "tech-old")
    (root / "tech-old" / "weights_hrp.json").unlink()
    m = _manifest(small_manifest_dict, tech="tech-old")
    msg = _error(_plan(m, write_manifest), root)
    assert "sleeve 'tech'" in msg and "is incomplete" in msg and "weights_hrp.json" in msg


def test_pinned_run_lacking_a_risk_profile(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, tech="tech-old")
    m["profiles"]["meta_pinned"]["profiles"] = ["equal_weight", "hrp", "min_variance"]
    msg = _error(_plan(m, write_manifest), pinned)
    assert "is incomplete" in msg and "weights_min_variance.json" in msg


def test_pinned_run_with_other_windows_or_direction(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, tech="tech-old")
    m["defaults"]["backtest"]["train_window"] = 100
    assert "train/test 126/21, the manifest now says 100/21" in _error(_plan(m, write_manifest, "windows.json"), pinned)
    m = _manifest(small_manifest_dict, tech="tech-old")
    m["profiles"]["tech"]["universe"]["direction"] = "SHORT"
    assert "has direction 'LONG', but profile 'tech' is 'SHORT'" in _error(_plan(m, write_manifest, "dir.json"), pinned)


def test_a_run_cannot_pin_itself(pinned, small_manifest_dict, write_manifest):
    m = _manifest(small_manifest_dict, tech="tech-old")
    assert "this run's own id" in _error(_plan(m, write_manifest), pinned, run_id="tech-old")


def test_execute_sleeves_clears_pins(small_manifest, runs_root):
    ctx = RunContext.from_config(
        {"profile": "meta_pinned", "manifest": str(small_manifest), "run_id": "x", "runs_root": str(runs_root),
         "execute_sleeves": True},
        environ={},
    )
    assert all(n.pin is None for n in ctx.plan.atomic_nodes())
    kept = RunContext.from_config(
        {"profile": "meta_pinned", "manifest": str(small_manifest), "run_id": "x", "runs_root": str(runs_root)},
        environ={},
    )
    assert kept.plan.nodes["sleeves/tech"].pin == "tech-old"
    # an unresolvable pin is no error when every sleeve is recomputed
    jobs = MetaPipeline("meta_pinned", manifest=small_manifest, run_id="x", runs_root=runs_root, dry_run=True,
                        execute_sleeves=True).execute().jobs
    rules = sorted(j.rule for j in jobs if j.rule in {"sleeve", "pinned_sleeve"})
    assert rules == ["sleeve", "sleeve"]
    with pytest.raises(DataError, match="pinned run_id 'tech-old' not found"):
        MetaPipeline("meta_pinned", manifest=small_manifest, run_id="y", runs_root=runs_root, dry_run=True)


def test_execute_sleeves_recomputes_the_pinned_sleeve(pinned):
    MetaPipeline("meta_pinned", manifest=SMALL_MANIFEST, run_id="fresh", runs_root=pinned, ray=False,
                 execute_sleeves=True).execute()
    node = pinned / "fresh" / "sleeves" / "tech"
    prov = json.loads((node / "provenance.json").read_text())
    assert prov["computed"] is True and prov["run_id"] == "fresh" and "pinned_run_id" not in prov
    # the same code on the same data: the recomputed stream equals the pinned one
    np.testing.assert_allclose(
        pd.read_parquet(node / "returns.parquet"), pd.read_parquet(pinned / "tech-old" / "returns.parquet"),
        rtol=0, atol=1e-12,
    )
