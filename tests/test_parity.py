"""Walk-forward parity: health.on_parity_mismatch does what it says, for each of its values."""

from __future__ import annotations

import copy
import json

import pytest

from tradingview_scraper import run_plan
from tradingview_scraper.errors import ConfigError
from tradingview_scraper.manifest import load_plan
from tradingview_scraper.orchestration.cli import main

PROG = "run_meta_pipeline.py"


def _mismatched(small: dict, policy: str | None) -> dict:
    """meta_small with two of its three sleeves on other walk-forward windows than its 126/21."""
    m = copy.deepcopy(small)
    m["profiles"]["staples"]["backtest"] = {"test_window": 10}
    m["profiles"]["factors"]["backtest"] = {"train_window": 100}
    if policy is not None:
        m["profiles"]["meta_small"]["health"] = {"on_parity_mismatch": policy}
    return m


@pytest.mark.parametrize("policy", [None, "error"])
def test_error_refuses_the_run_in_one_line_naming_every_mismatched_sleeve(
    policy, small_manifest_dict, write_manifest, runs_root, capfd
):
    """The default ("error"): exit 2, one line naming each sleeve and its windows, nothing written."""
    manifest = write_manifest(_mismatched(small_manifest_dict, policy))
    capfd.readouterr()
    code = main(["--profile", "meta_small", "--manifest", str(manifest), "--runs-root", str(runs_root),
                 "--run-id", "p", "--no-ray"], prog=PROG, require_meta=True)  # fmt: skip
    err = capfd.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert (
        "profile 'meta_small': sleeve 'staples': walk-forward windows train/test 126/10; "
        "sleeve 'factors': walk-forward windows train/test 100/21 differ from the meta profile's 126/21; "
        "sleeves must share windows" in lines[0]
    ), lines[0]
    assert "health.on_parity_mismatch" in lines[0], "the line says how to run anyway"
    assert list(runs_root.iterdir()) == []


def test_warn_records_one_line_per_meta_node(small_manifest_dict, write_manifest):
    plan = load_plan("meta_small", write_manifest(_mismatched(small_manifest_dict, "warn")))
    (warning,) = plan.root.config["parity_warnings"]
    assert "sleeve 'staples': walk-forward windows train/test 126/10" in warning
    assert "sleeve 'factors': walk-forward windows train/test 100/21" in warning
    assert warning.endswith("continuing (health.on_parity_mismatch = warn): their streams are not comparable "
                            "window for window")  # fmt: skip
    assert "parity_warnings" not in load_plan("meta_small", write_manifest(small_manifest_dict, "ok.json")).root.config


def test_a_nested_meta_sleeve_is_checked_too(small_manifest_dict, write_manifest):
    m = copy.deepcopy(small_manifest_dict)
    for name in ("meta_small", "tech", "staples", "factors"):  # meta_mid's sleeve 'inner', consistent inside
        m["profiles"][name]["backtest"] = {"train_window": 150}
    with pytest.raises(ConfigError, match=r"profile 'meta_mid': sleeve 'inner': walk-forward windows train/test "
                                          r"150/21 differ from the meta profile's 126/21"):  # fmt: skip
        load_plan("meta_mid", write_manifest(m))


@pytest.mark.e2e
def test_warn_runs_and_reports_on_the_console_in_the_report_and_in_memory(
    small_manifest_dict, write_manifest, runs_root, capfd
):
    """"warn": the run finishes; the warning is a console line, the report's first warning, the
    resolved manifest's record and the in-memory result's."""
    m = _mismatched(small_manifest_dict, "warn")
    m["profiles"]["meta_small"]["sleeves"] = m["profiles"]["meta_small"]["sleeves"][:2]  # tech, staples
    manifest = write_manifest(m)
    capfd.readouterr()
    code = main(["--profile", "meta_small", "--manifest", str(manifest), "--runs-root", str(runs_root),
                 "--run-id", "w", "--no-ray", "--profiles", "equal_weight"], prog=PROG, require_meta=True)  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0, err
    expected = ("profile 'meta_small': sleeve 'staples': walk-forward windows train/test 126/10 differ from the "
                "meta profile's 126/21; continuing (health.on_parity_mismatch = warn)")  # fmt: skip
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and expected in warnings[0], err
    run = runs_root / "w"
    report = (run / "report.md").read_text()
    first = next(ln for ln in report.splitlines() if "WARNING" in ln)
    assert expected in first, "the report's first warning is the parity mismatch"
    resolved = json.loads((run / "manifest.resolved.json").read_text())
    assert expected in resolved["nodes"]["."]["config"]["parity_warnings"][0]
    result = run_plan("meta_small", manifest=manifest, profiles="equal_weight")
    assert any(expected in w for w in result.root.warnings)
