"""Manifest validation and resolution: the plan, and every configuration error as one line."""

from __future__ import annotations

import pytest

from tradingview_scraper.errors import ConfigError
from tradingview_scraper.manifest import load_manifest, load_plan, resolve

from .bad_manifests import BAD, mutate


def test_resolution_deep_merges_defaults(small_manifest_dict):
    plan = resolve(small_manifest_dict, "meta_small")
    assert plan.risk_profiles == ["equal_weight", "min_variance", "hrp", "risk_parity"]
    assert list(plan.nodes) == [".", "sleeves/tech", "sleeves/staples", "sleeves/factors"]
    factors = plan.nodes["sleeves/factors"].config
    assert factors["data"] == {"source": "skfolio", "dataset": "factors", "start": "2019-01-01", "end": "2021-12-31"}
    assert factors["backtest"]["train_window"] == 126
    assert factors["universe"]["direction"] == "LONG"
    root = plan.root
    assert root.kind == "meta" and root.config["meta_allocation"] == {"min_weight": 0.1, "max_weight": 0.6}
    assert root.children == ["sleeves/tech", "sleeves/staples", "sleeves/factors"]


def test_shipped_manifest_profiles_resolve():
    for name in ("meta_demo", "meta_production"):
        plan = load_plan(name)
        assert plan.root.is_meta and len(plan.root.children) >= 3
        assert plan.root.config["meta_allocation"]["min_weight"] == 0.05


def test_risk_profile_override(small_manifest_dict):
    plan = resolve(small_manifest_dict, "meta_small", risk_profiles=["hrp", "equal_weight"])
    assert plan.risk_profiles == ["hrp", "equal_weight"]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_manifest_is_one_line_config_error(small_manifest_dict, write_manifest, case):
    _, change, profile, pattern = case
    path = write_manifest(mutate(small_manifest_dict, change))
    with pytest.raises(ConfigError, match=pattern) as info:
        load_plan(profile, path)
    assert "\n" not in str(info.value)


def test_cycle_names_the_loop(small_manifest_dict, write_manifest):
    def make_cycle(m):
        m["profiles"]["meta_a"] = {"sleeves": [{"id": "t", "profile": "tech"}, {"id": "b", "meta_profile": "meta_b"}]}
        m["profiles"]["meta_b"] = {"sleeves": [{"id": "s", "profile": "staples"}, {"id": "a", "meta_profile": "meta_a"}]}

    path = write_manifest(mutate(small_manifest_dict, make_cycle))
    with pytest.raises(ConfigError, match=r"cycle: meta_a -> meta_b -> meta_a"):
        load_plan("meta_a", path)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"m.json' is not valid JSON"):
        load_manifest(bad)
    with pytest.raises(ConfigError, match=r"not found"):
        load_manifest(tmp_path / "missing.json")


def test_unconfigured_cli_profiles(small_manifest_dict):
    with pytest.raises(ConfigError, match=r"--profiles: min_variance not configured for profile 'meta_two'"):
        resolve(small_manifest_dict, "meta_two", risk_profiles=["min_variance"])
