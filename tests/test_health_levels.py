"""Health at every level, on real runs of the real scripts.

A sleeve ``halted`` holds two symbols whose prices stand still for 420 of 756 days: a
min-variance window whose train window lies inside the halt fails, at either level (zero
variance). The sleeve has 30 windows, 16 succeed (53%, above the 50% threshold set here);
the meta level sees the sleeve's stream, flat during the halt, on fewer windows (its
stream starts one train window later): 10 of 24 succeed (42%). That meta node is
unhealthy under the same policy as a sleeve: the run stops naming it, or warns on the
console.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from .conftest import PROJECT, SMALL_MANIFEST

pytestmark = pytest.mark.e2e

HALT = (150, 570)  # rows of constant prices
RATIO = re.compile(r"min_variance \((\d+)/(\d+) windows succeeded\)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from skfolio.datasets import load_sp500_dataset

    tmp = tmp_path_factory.mktemp("health")
    index = load_sp500_dataset().loc["2019-01-01":"2021-12-31"].index
    rng = np.random.default_rng(11)
    walk = 50.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, (len(index), 2)), axis=0)
    rows = np.arange(len(index))[:, None]
    prices = np.where((rows >= HALT[0]) & (rows < HALT[1]), walk[HALT[0]], walk)
    table = pd.DataFrame(prices, index=pd.DatetimeIndex(index, name="date"), columns=["HALTA", "HALTB"])
    csv = tmp / "halted.csv"
    table.to_csv(csv)
    m = json.loads(SMALL_MANIFEST.read_text())
    # The halt is a stale run in mid-history, which the data-quality pass names on the console
    # (tests/test_data_quality.py); off here, where the health gate's own lines are counted.
    m["defaults"]["health"] = {"min_success_ratio": 0.5, "data_quality": {"stale_prices": "off"}}
    halted = {"data": {"source": "table", "path": str(csv)}, "universe": {"symbols": ["HALTA", "HALTB"]},
              "backtest": {"commission": 0.0, "slippage": 0.0}}  # fmt: skip
    m["profiles"]["halted"] = halted
    m["profiles"]["halted_strict"] = {**halted, "health": {"min_success_ratio": 0.75}}
    sick = {"sleeves": [{"id": "staples", "profile": "staples"}, {"id": "halted", "profile": "halted"}],
            "profiles": ["equal_weight", "min_variance"]}  # fmt: skip
    m["profiles"]["meta_sick"] = sick
    m["profiles"]["meta_sick_warn"] = {**sick, "health": {"on_unhealthy": "warn"}}
    m["profiles"]["meta_parent"] = {
        "sleeves": [{"id": "branch", "meta_profile": "meta_sick"}, {"id": "tech", "profile": "tech"}],
        "profiles": ["equal_weight", "min_variance"],
    }
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(m))
    return manifest, tmp / "runs"


def _run(script, profile, run_id, setup):
    manifest, runs = setup
    argv = [sys.executable, f"scripts/{script}", "--profile", profile, "--manifest", str(manifest),
            "--run-id", run_id, "--runs-root", str(runs), "--no-ray"]  # fmt: skip
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True)
    return proc, runs / run_id


def _ratio(text):
    ok, attempted = map(int, RATIO.search(text).groups())
    return ok / attempted


@pytest.fixture(scope="module")
def stopped(setup):
    return _run("run_meta_pipeline.py", "meta_sick", "stop", setup)


def test_an_unhealthy_meta_node_stops_the_run_naming_it(stopped):
    proc, run = stopped
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("run_meta_pipeline.py: error: meta profile 'meta_sick' is unhealthy: min_variance ("), lines[0]
    assert "its meta walk-forward; the minimum success ratio is 50% (health.min_success_ratio)" in lines[0]
    assert _ratio(lines[0]) < 0.5
    sleeve = json.loads((run / "sleeves/halted/health.json").read_text())["profiles"]["min_variance"]
    assert sleeve["windows_succeeded"] / sleeve["windows_attempted"] >= 0.5, "the sleeve itself passes the gate"
    assert not (run / "meta/weights_min_variance.json").exists() and not (run / "report.md").exists()
    assert (run / "meta/weights_equal_weight.json").exists(), "the healthy profile's node completed"


def test_warn_reaches_the_console_and_the_run_finishes(setup):
    proc, run = _run("run_meta_pipeline.py", "meta_sick_warn", "warn", setup)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("warning: meta profile 'meta_sick_warn' is unhealthy: min_variance (")
    assert warnings[0].endswith("; continuing (health.on_unhealthy = warn)")
    record = json.loads((run / "meta/weights_min_variance.json").read_text())["walk_forward"]
    assert record["windows_succeeded"] / record["windows_attempted"] == pytest.approx(_ratio(warnings[0]))
    assert record["windows_fallback"] > record["windows_succeeded"]
    assert (run / "report.md").exists() and "done:" in proc.stdout


def test_an_unhealthy_nested_meta_node_is_named_by_its_sleeve_id(setup):
    proc, run = _run("run_meta_pipeline.py", "meta_parent", "nested", setup)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error: meta sleeve 'branch' (meta profile 'meta_sick', node sleeves/branch) is unhealthy: min_variance (" in lines[0]
    assert not (run / "meta").exists(), "the parent's meta layer never ran"


def test_an_unhealthy_standalone_sleeve_warns_on_the_console(setup):
    proc, run = _run("run_production_pipeline.py", "halted_strict", "alone", setup)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("warning: sleeve 'halted_strict' is unhealthy: min_variance (16/30 windows succeeded)")
    assert warnings[0].endswith("minimum success ratio is 75% (health.min_success_ratio); a meta run consuming it stops")
    assert (run / "health.json").exists() and "done:" in proc.stdout


def test_the_in_memory_plan_applies_the_same_meta_gate(setup):
    from tradingview_scraper import run_plan
    from tradingview_scraper.errors import MetaError

    manifest, _ = setup
    with pytest.raises(MetaError, match=r"^meta profile 'meta_sick' is unhealthy: min_variance \("):
        run_plan("meta_sick", manifest=manifest)
    result = run_plan("meta_sick_warn", manifest=manifest)
    warned = [w for w in result.root.warnings if w.startswith("meta profile 'meta_sick_warn' is unhealthy")]
    assert len(warned) == 1 and warned[0].endswith("; continuing (health.on_unhealthy = warn)")


def test_plain_snakemake_shows_the_warning_too(setup):
    from pathlib import Path

    manifest, runs = setup
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run(
        [str(snakemake), "-s", "workflow/Snakefile", "--config", "profile=meta_sick_warn", f"manifest={manifest}",
         "run_id=plain", f"runs_root={runs}", "ray=false", "--cores", "2", "-q"],
        cwd=PROJECT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "warning: meta profile 'meta_sick_warn' is unhealthy: min_variance (" in out
