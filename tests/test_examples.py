"""The shipped synthetic TradingView exports: reproducible from their script, and runnable."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import PROJECT

SHIPPED = PROJECT / "data" / "tradingview"


def _script():
    spec = importlib.util.spec_from_file_location("make_example_data", PROJECT / "scripts" / "make_example_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_rewrites_the_shipped_files_byte_for_byte(tmp_path):
    written = _script().write_examples(tmp_path)
    assert len(written) == 5
    for path in written:
        shipped = SHIPPED / path.relative_to(tmp_path)
        assert shipped.read_bytes() == path.read_bytes(), shipped
        assert path.name.startswith("SYNTHETIC_")


def test_profiles_say_the_data_are_synthetic():
    profiles = json.loads((PROJECT / "config" / "manifest.json").read_text())["profiles"]
    for name in ("crypto_tv", "equity_tv", "meta_mixed_tv"):
        assert "SYNTHETIC" in profiles[name]["description"], name


@pytest.mark.e2e
def test_mixed_calendar_meta_profile_runs_out_of_the_box(tmp_path):
    run = MetaPipeline("meta_mixed_tv", run_id="mixed", runs_root=tmp_path, ray=False, profiles="hrp").execute().run_dir
    crypto = pd.read_parquet(run / "sleeves/crypto/returns.parquet")
    meta = pd.read_parquet(run / "meta/returns_hrp.parquet")
    assert (crypto.index.day_of_week >= 5).any()  # the crypto sleeve keeps its weekends
    assert not (meta.index.day_of_week >= 5).any()  # common dates are the equities' weekdays
    flat = json.loads((run / "flattened_hrp.json").read_text())
    assert {r["symbol"] for r in flat["weights"]} == {"BTCUSDT", "ETHUSDT", "SYNA", "SYNB", "SYNC"}
    assert (run / "report.html").is_file() and (run / "risk_hrp.json").is_file()
