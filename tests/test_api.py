"""The public Python API: the in-memory plan equals the file-target pipeline's artifacts."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import tradingview_scraper as tvs

from .conftest import PROJECT, SMALL_MANIFEST


@pytest.fixture(scope="module")
def nested():
    """meta_deep (meta_mid (meta_small, energy), tech) on two risk profiles, in memory."""
    return tvs.run_plan("meta_deep", manifest=SMALL_MANIFEST, profiles="equal_weight,hrp")


def test_public_names_are_exported():
    assert {"run_plan", "run_pipeline", "PlanResult", "load_plan", "MetaPipeline"} <= set(tvs.__all__)
    for name in tvs.__all__:
        assert getattr(tvs, name) is not None


def test_in_memory_plan_holds_every_node_and_conserves_weight(nested):
    assert set(nested.nodes) == set(nested.plan.nodes)
    for rp in nested.risk_profiles:
        w = nested.meta_weights(rp)
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        holdings = nested.holdings(rp)
        assert holdings["weight"].sum() == pytest.approx(1.0, abs=1e-9)
        assert set(holdings["symbol"]) >= set(nested.holdings(rp, node="sleeves/tech")["symbol"])
    metrics = nested.metrics()
    assert list(metrics.index) == nested.risk_profiles and metrics.notna().any(axis=None)


def test_unhealthy_sleeve_stops_the_in_memory_plan_too(small_manifest_dict, write_manifest, tmp_path):
    rng = np.random.default_rng(0)
    idx = pd.bdate_range("2019-01-01", periods=400)
    prices = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, (400, 3)), axis=0)), idx, ["A", "B", "HALT"])
    prices.loc[idx[:320], "HALT"] = 50.0  # a constant price: min-variance fails on most windows
    prices.index.name = "date"
    prices.to_csv(tmp_path / "halted.csv")
    m = small_manifest_dict
    m["profiles"]["halted"] = {
        "data": {"source": "table", "path": str(tmp_path / "halted.csv")},
        "universe": {"symbols": ["A", "B", "HALT"]},
    }
    m["profiles"]["meta_sick"] = {"sleeves": [{"id": "tech", "profile": "tech"}, {"id": "halted", "profile": "halted"}]}
    with pytest.raises(tvs.SleeveError, match="sleeve 'halted' is unhealthy: min_variance"):
        tvs.run_plan("meta_sick", manifest=write_manifest(m), profiles="min_variance")


@pytest.mark.e2e
def test_in_memory_plan_equals_the_file_target_pipeline(nested, tmp_path):
    """One meta composition: what the API holds is what the pipeline writes, bit for bit."""
    from tradingview_scraper.layout import dumps_json

    result = tvs.run_pipeline(
        "meta_deep", manifest=SMALL_MANIFEST, profiles="equal_weight,hrp", run_id="api", runs_root=tmp_path, ray=False
    )
    for path, node in nested.nodes.items():
        d = result.run_dir if path == "." else result.run_dir / path
        pd.testing.assert_frame_equal(node.returns, pd.read_parquet(d / "returns.parquet"), check_exact=True)
        for rp in nested.risk_profiles:
            if node.spec.is_meta:
                stored = pd.read_parquet(d / f"meta/returns_{rp}.parquet")
                pd.testing.assert_frame_equal(node.meta_returns[rp], stored, check_exact=True)
                assert dumps_json(node.meta_weights[rp]) == (d / f"meta/weights_{rp}.json").read_text()
                flat = json.loads((d / f"flattened_{rp}.json").read_text())
                assert flat.pop("run_id") == "api"
                assert dumps_json(node.flattened[rp]) == dumps_json(flat)


def _doc_examples() -> list[str]:
    text = (PROJECT / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.e2e
@pytest.mark.parametrize("index", range(len(_doc_examples())))
def test_docs_api_examples_run(index, tmp_path, monkeypatch):
    (tmp_path / "config").symlink_to(PROJECT / "config")  # the shipped manifest, as in the checkout
    monkeypatch.chdir(tmp_path)
    exec(compile(_doc_examples()[index], f"docs/api.md example {index + 1}", "exec"), {})
    if "run_pipeline" in _doc_examples()[index]:
        assert (tmp_path / "data" / "runs" / "api-example" / "flattened_hrp.json").is_file()
