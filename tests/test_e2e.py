"""A real end-to-end run of a small meta profile: artifact set and invariants."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import audit

from .conftest import SMALL_MANIFEST

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]
SLEEVES = ["tech", "staples", "factors"]


def _json(path):
    return json.loads(path.read_text())


def test_artifact_set(small_run):
    expected = {"manifest.resolved.json", "returns.parquet", "report.md", "report.html", "audit.jsonl"}
    expected |= {f"flattened_{p}.json" for p in PROFILES}
    expected |= {f"meta/{k}_{p}.{ext}" for p in PROFILES for k, ext in
                 (("returns", "parquet"), ("weights", "json"), ("stream", "parquet"))}
    expected |= {"meta/cluster_tree_hrp.json"}
    for s in SLEEVES:
        expected |= {f"sleeves/{s}/{f}" for f in ("returns.parquet", "health.json", "sign_test.json", "provenance.json")}
        expected |= {f"sleeves/{s}/weights_{p}.json" for p in PROFILES}
    present = {p.relative_to(small_run).as_posix() for p in small_run.rglob("*") if p.is_file()}
    assert expected <= present, sorted(expected - present)
    assert not [p for p in present if p.endswith((".pkl", ".pickle", ".tmp"))]


def test_sleeve_returns_shape(small_run):
    r = pd.read_parquet(small_run / "sleeves/tech/returns.parquet")
    assert list(r.columns) == PROFILES and r.index.name == "date"
    assert r.index.is_monotonic_increasing and np.isfinite(r.to_numpy()).all()


@pytest.mark.parametrize("profile", PROFILES)
def test_flattened_invariants(small_run, profile):
    meta = _json(small_run / f"meta/weights_{profile}.json")
    flat = _json(small_run / f"flattened_{profile}.json")
    assert flat["risk_profile"] == profile and flat["run_id"] == small_run.name and flat["meta_profile"] == "meta_small"
    sw = flat["sleeve_weights"]
    assert sw == meta["weights"] and set(sw) == set(SLEEVES)
    assert sum(sw.values()) == pytest.approx(1, abs=1e-9)
    assert all(0.1 - 1e-9 <= w <= 0.6 + 1e-9 for w in sw.values()), sw
    assert sum(row["weight"] for row in flat["weights"]) == pytest.approx(1, abs=1e-9)
    inner = {s: {(h["symbol"], h["direction"]): h["weight"] for h in _json(small_run / f"sleeves/{s}/weights_{profile}.json")["weights"]}
             for s in SLEEVES}
    for row in flat["weights"]:
        key = (row["symbol"], row["direction"])
        expected = sum(sw[s] * inner[s].get(key, 0.0) for s in SLEEVES)
        assert row["weight"] == pytest.approx(expected, abs=1e-12)


def test_meta_returns_are_the_inner_join(small_run):
    frame = pd.read_parquet(small_run / "meta/returns_hrp.parquet")
    sleeves = {s: pd.read_parquet(small_run / f"sleeves/{s}/returns.parquet")["hrp"] for s in SLEEVES}
    common = sorted(set.intersection(*(set(s.index) for s in sleeves.values())))
    assert list(frame.index) == common and list(frame.columns) == SLEEVES


def test_report_and_audit(small_run):
    md = (small_run / "report.md").read_text()
    for p in PROFILES:
        assert f"## {p}" in md
    assert audit.verify(small_run) == []


def _artifact_set(run_dir):
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}


def test_snakemake_cli_and_scripts_produce_the_same_artifact_set(small_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    runs = tmp_path / "runs"
    snakemake = Path(sys.executable).with_name("snakemake")
    subprocess.run(
        [str(snakemake), "-s", "workflow/Snakefile", "--config", "profile=meta_small", f"manifest={SMALL_MANIFEST}",
         "run_id=cli", f"runs_root={runs}", "ray=false", "--cores", "2", "-q"],
        check=True, capture_output=True, text=True,
    )
    subprocess.run(
        [sys.executable, "scripts/run_production_pipeline.py", "--profile", "meta_small", "--manifest",
         str(SMALL_MANIFEST), "--run-id", "prod", "--runs-root", str(runs), "--no-ray"],
        check=True, capture_output=True, text=True,
    )
    expected = _artifact_set(small_run)
    assert _artifact_set(runs / "cli") == expected
    assert _artifact_set(runs / "prod") == expected
    for name in ("flattened_hrp.json", "meta/weights_min_variance.json"):
        a, b = _json(small_run / name), _json(runs / "cli" / name)
        a.pop("run_id", None), b.pop("run_id", None)
        assert a == b
