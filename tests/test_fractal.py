"""Fractal meta layer: nested trees end to end, out-of-sample meta streams, fallback, exact flattening."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import stages, steps
from tradingview_scraper.errors import ConfigError, MetaError
from tradingview_scraper.layout import write_parquet
from tradingview_scraper.manifest import load_plan
from tradingview_scraper.meta import meta_optimize
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.run import RunContext

from .conftest import SMALL_MANIFEST

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

DEEP_PROFILES = ["equal_weight", "hrp"]
# meta_deep -> {branch: meta_mid -> {inner: meta_small -> {tech, staples, factors}, energy}, tech}
META_NODES = [".", "sleeves/branch", "sleeves/branch/sleeves/inner"]


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    MetaPipeline("meta_deep", manifest=SMALL_MANIFEST, run_id="deep", runs_root=root, ray=False).execute()
    return root / "deep"


def _json(path):
    return json.loads(path.read_text())


def test_depth_three_dry_run_orders_children_before_parents(runs_root):
    jobs = MetaPipeline("meta_deep", manifest=SMALL_MANIFEST, run_id="d", runs_root=runs_root,
                        dry_run=True, forceall=True).execute().jobs
    run_dir = str(runs_root / "d")

    def node_of(job):
        return job.wildcards.get("node", "")

    index = {(j.rule, node_of(j), j.wildcards.get("profile")): i for i, j in enumerate(jobs)}
    for parent, child in [(run_dir, f"{run_dir}/sleeves/branch"),
                          (f"{run_dir}/sleeves/branch", f"{run_dir}/sleeves/branch/sleeves/inner")]:
        for p in DEEP_PROFILES:
            assert index[("flatten", child, p)] < index[("meta_returns", parent, None)]
        assert index[("node_returns", child, None)] < index[("meta_returns", parent, None)]


def test_cycle_through_three_levels_is_refused(small_manifest_dict, write_manifest):
    m = small_manifest_dict
    m["profiles"]["meta_a"] = {"sleeves": [{"id": "t", "profile": "tech"}, {"id": "b", "meta_profile": "meta_b"}]}
    m["profiles"]["meta_b"] = {"sleeves": [{"id": "s", "profile": "staples"}, {"id": "c", "meta_profile": "meta_c"}]}
    m["profiles"]["meta_c"] = {"sleeves": [{"id": "e", "profile": "energy"}, {"id": "a", "meta_profile": "meta_a"}]}
    with pytest.raises(ConfigError, match=r"cycle: meta_a -> meta_b -> meta_c -> meta_a"):
        load_plan("meta_a", write_manifest(m))


def test_every_level_is_a_run_directory(deep_run):
    for node in META_NODES:
        d = deep_run / node
        assert (d / "returns.parquet").exists() and (d / "report.md").exists()
        for p in DEEP_PROFILES:
            assert (d / f"flattened_{p}.json").exists()
        tree = _json(d / "meta/cluster_tree_hrp.json")
        assert sorted(tree["order"]) == sorted(tree["labels"]) and len(tree["linkage"]) == len(tree["labels"]) - 1


def _expected_flat(run_dir, node, profile):
    """Recursive product of the levels' weights, computed independently of flattening.flatten."""
    weights = _json(run_dir / node / f"meta/weights_{profile}.json")["weights"]
    out: dict[tuple[str, str], float] = {}
    for sid, w in weights.items():
        child = run_dir / node / "sleeves" / sid
        if (child / "meta").is_dir():
            inner = _expected_flat(run_dir, f"{node}/sleeves/{sid}", profile)
        else:
            rows = _json(child / f"weights_{profile}.json")["weights"]
            inner = {(r["symbol"], r["direction"]): r["weight"] for r in rows}
        for key, x in inner.items():
            out[key] = out.get(key, 0.0) + w * x
    return out


@pytest.mark.parametrize("profile", DEEP_PROFILES)
def test_root_flattening_is_the_product_of_the_levels(deep_run, profile):
    flat = _json(deep_run / f"flattened_{profile}.json")
    expected = _expected_flat(deep_run, ".", profile)
    got = {(r["symbol"], r["direction"]): r["weight"] for r in flat["weights"]}
    assert set(got) == {k for k, v in expected.items() if v > 0}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-12)
    assert abs(sum(got.values()) - 1.0) <= 1e-9
    # AAPL is held by the root's tech sleeve and, three levels down, by inner's tech sleeve
    aapl = next(r for r in flat["weights"] if r["symbol"] == "AAPL")
    assert set(aapl["sleeves"]) == {"branch", "tech"}


def test_parent_consumes_the_childs_out_of_sample_stream(deep_run):
    child = pd.read_parquet(deep_run / "sleeves/branch/returns.parquet")
    parent_in = pd.read_parquet(deep_run / "meta/returns_hrp.parquet")
    common = parent_in.index
    np.testing.assert_allclose(parent_in["branch"].to_numpy(), child.loc[common, "hrp"].to_numpy())
    # the child's stream starts one meta train window after its own inputs start
    inner_in = pd.read_parquet(deep_run / "sleeves/branch/meta/returns_hrp.parquet")
    assert child.index[0] == inner_in.index[126]


def test_meta_stream_uses_no_future_data():
    rng = np.random.default_rng(7)
    idx = pd.bdate_range("2020-01-01", periods=260)
    R = pd.DataFrame(rng.normal(0.0004, [0.005, 0.01, 0.02], size=(260, 3)), index=idx, columns=["a", "b", "c"])
    kw = dict(min_weight=0.1, max_weight=0.6, train_window=100, test_window=20)
    _, base, _ = meta_optimize(R, "min_variance", **kw)
    changed = R.copy()
    changed.iloc[160:] = changed.iloc[160:] * 4 + 0.01  # rewrite history after the 3rd test window
    _, after, _ = meta_optimize(changed, "min_variance", **kw)
    pd.testing.assert_series_equal(base.iloc[:60], after.iloc[:60])  # windows fitted on the past only
    assert not np.allclose(base.iloc[60:], after.iloc[60:])


def test_meta_fallback_is_recorded_in_weights_and_audit(runs_root):
    ctx = RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "fb",
                                  "runs_root": str(runs_root), "ray": False})
    idx = pd.bdate_range("2020-01-01", periods=200, name="date")
    write_parquet(ctx.root.file("meta_returns", profile="risk_parity"),
                  pd.DataFrame(0.0, index=idx, columns=["tech", "staples", "factors"]))
    files = {
        "input": {"returns": ctx.root.file("meta_returns", profile="risk_parity")},
        "output": {k: ctx.root.file(f"meta_{k}", profile="risk_parity") for k in ("weights", "stream")},
    }
    # Every window falls back: under the default policy the node is unhealthy and stops ...
    with pytest.raises(MetaError, match=r"meta profile 'meta_small' is unhealthy: risk_parity \(0/4 windows"):
        stages.run_step(steps.step("meta_optimize"), ctx, ".", "risk_parity", **files)
    assert not ctx.root.file("meta_weights", profile="risk_parity").exists()
    # ... and with on_unhealthy = warn it goes on, recording the fallback.
    ctx.plan.root.config["health"]["on_unhealthy"] = "warn"
    stages.run_step(steps.step("meta_optimize"), ctx, ".", "risk_parity", **files)
    record = _json(ctx.root.file("meta_weights", profile="risk_parity"))
    assert record["fallback"] is True and "NonPositiveVarianceError" in record["fallback_reason"]
    assert record["weights"] == pytest.approx({"tech": 1 / 3, "staples": 1 / 3, "factors": 1 / 3})
    entries = [json.loads(line) for line in ctx.root.file("audit").read_text().splitlines()]
    first, stage = [e for e in entries if e.get("kind") == "stage" and e["stage"] == "meta_optimize"]
    assert first["outcome"] != "success"
    assert stage["params"]["fallback"] is True and stage["outcome"] == "success"


def test_changing_a_leaf_reruns_only_its_branch_and_ancestors(deep_run, small_manifest_dict, write_manifest):
    m = small_manifest_dict
    m["profiles"]["energy"]["backtest"] = {"commission": 0.002}
    jobs = MetaPipeline("meta_deep", manifest=write_manifest(m), run_id="deep", runs_root=deep_run.parent,
                        dry_run=True).execute().jobs
    sleeves = sorted(j.wildcards["node"].split("/deep/")[-1] for j in jobs if j.rule == "sleeve")
    assert sleeves == ["sleeves/branch/sleeves/energy"]
    meta_nodes = {j.wildcards["node"].split("/deep")[-1] for j in jobs if j.rule.startswith("meta_")}
    assert meta_nodes == {"", "/sleeves/branch"}, "the untouched inner branch does not rerun"
