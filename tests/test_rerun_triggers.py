"""Every dependency is a rule input or a rerun trigger: price files and package code (real runs).

The runs execute from a copy of the project (package, workflow, scripts) in a temp dir, so
the test can edit the package's source like a developer would; ``PYTHONPATH`` makes that
copy the one imported. Which jobs ran is read from the audit ledger: one stage entry per job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tradingview_scraper import deps

from .helpers import (
    copy_project,
    file_bytes,
    last_seq,
    run_script,
    stages_since,
    table_manifest,
    write_table_data,
)

pytestmark = pytest.mark.e2e

META_CHAIN = [
    ("flatten", "."),
    ("flatten", "."),
    ("meta_optimize", "."),
    ("meta_optimize", "."),
    ("meta_returns", "."),
    ("meta_stream", "."),
    ("report", "."),
    ("risk", "."),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("triggers")
    data = root / "data"
    write_table_data(data)
    (root / "manifest.json").write_text(json.dumps(table_manifest(data)))
    repo = copy_project(root / "repo")
    return repo, data


def _run(repo: Path) -> None:
    proc = run_script(repo, "--profile", "meta_tables", "--manifest", "../manifest.json", "--run-id", "r", "--no-ray")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("done:"), proc.stdout


def _stamps(run_dir: Path, sleeve: str) -> dict[str, tuple[bytes, int]]:
    d = run_dir / "sleeves" / sleeve
    return {rel: (data, (d / rel).stat().st_mtime_ns) for rel, data in file_bytes(d).items()}


def _edit_price(path: Path, line: int = 5) -> None:
    """Change one close price of a CSV file (the last digit of its last column)."""
    lines = path.read_text().splitlines()
    head, _, last = lines[line - 1].rpartition(",")
    lines[line - 1] = f"{head},{float(last) * 1.01:.6f}"
    path.write_text("\n".join(lines) + "\n")


def _edit_module(repo: Path, module: str) -> None:
    """A real code change to ``module`` of the copied package (a new module-level constant)."""
    pkg = repo / "tradingview_scraper"
    path = pkg / f"{module}.py" if (pkg / f"{module}.py").is_file() else pkg / module / "__init__.py"
    path.write_text(path.read_text() + "\n_RERUN_PROBE = 1\n")


def test_the_copy_is_what_runs(project):
    repo, _ = project
    out = subprocess.run(
        [sys.executable, "-c", "import tradingview_scraper; print(tradingview_scraper.__file__)"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert Path(out.strip()).is_relative_to(repo)


def test_price_files_and_code_are_rerun_triggers(project):
    repo, data = project
    run_dir = repo / "data" / "runs" / "r"
    _run(repo)
    assert len(stages_since(run_dir, 0)) == 3 + len(META_CHAIN) + 1  # + resolved manifest

    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == [], "a no-op rerun ran jobs"

    os.utime(data / "b.csv")  # newer, same bytes: Snakemake's checksum says unchanged
    _run(repo)
    assert stages_since(run_dir, seq) == []

    # One table sleeve's prices change: that sleeve and everything downstream, nothing else.
    before_b, before_c = _stamps(run_dir, "b"), _stamps(run_dir, "c")
    _edit_price(data / "a.csv")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", "sleeves/a"), *META_CHAIN])
    assert _stamps(run_dir, "b") == before_b and _stamps(run_dir, "c") == before_c, "untouched sleeves kept bytes and mtimes"

    # One TradingView export of sleeve c changes.
    before_a = _stamps(run_dir, "a")
    _edit_price(data / "tv" / "X_TWO, 1D.csv", line=9)
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", "sleeves/c"), *META_CHAIN])
    assert _stamps(run_dir, "a") == before_a and _stamps(run_dir, "b") == before_b

    # Report code changes: only the report reruns.
    kept = {k: v for k, v in file_bytes(run_dir).items() if not k.startswith("report")}
    _edit_module(repo, "report")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == [("report", ".")]
    assert {k: v for k, v in file_bytes(run_dir).items() if not k.startswith("report")} == kept

    # The stages module of the report and the resolved manifest changes: those two rerun, not every rule.
    _edit_module(repo, "stages/_report")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == [("report", "."), ("resolve", ".")]

    # Walk-forward code changes: every sleeve and the meta layer (which runs it too), not the manifest.
    _edit_module(repo, "backtest")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", f"sleeves/{s}") for s in "abc"] + META_CHAIN)

    proc = run_script(repo, "--profile", "meta_tables", "--manifest", "../manifest.json", "--run-id", "r", "--dry-run")
    assert "dry run: 0 jobs" in proc.stdout, proc.stdout


def test_code_hash_follows_imports_and_skips_glue():
    sleeve = deps.rule_modules("sleeve")
    assert {"sleeve.py", "backtest.py", "engines.py", "deps.py"} <= set(sleeve)
    data_pkg = Path(deps.PACKAGE_DIR) / "data"
    assert {f"data/{p.name}" for p in data_pkg.glob("*.py")} <= set(sleeve), "a package counts with every module"
    assert not any(rel.startswith(("orchestration/", "cluster/", "report")) for rel in sleeve)
    report = deps.rule_modules("report")
    assert "sleeve.py" not in report and any(rel.startswith("report") for rel in report)
    assert len({deps.code_hash(rule) for rule in ("sleeve", "meta_optimize", "report")}) == 3
    # A rule counts the stages module it calls and the stage context, not the other stages.
    assert {rel for rel in report if rel.startswith("stages/")} == {"stages/_common.py", "stages/_report.py"}
    pinned = {rel for rel in deps.rule_modules("pinned_sleeve") if rel.startswith("stages/")}
    # not the sleeve stage, whose outputs it shares; the checks of a source run it shares with the rebalance
    assert pinned == {"stages/_common.py", "stages/_pins.py", "stages/_sources.py"}



def test_code_modules_follow_relative_imports_only(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("x = 1\n")
    (pkg / "c.py").write_text("y = 2\n")
    mods = deps.code_modules(("a",), pkg)
    assert list(mods) == ["a.py", "b.py"]


def test_price_files_lists_exactly_what_a_sleeve_reads(tmp_path):
    write_table_data(tmp_path)
    m = table_manifest(tmp_path)
    assert deps.price_files(m["profiles"]["ta"]["data"], ["AAA"]) == [tmp_path / "a.csv"]
    tv = m["profiles"]["tv"]["data"]
    assert deps.price_files(tv, ["TWO"]) == [tmp_path / "tv" / "X_TWO, 1D.csv"]
    assert deps.price_files(tv, None) == [tmp_path / "tv" / "X_ONE, 1D.csv", tmp_path / "tv" / "X_TWO, 1D.csv"]
    assert deps.price_files({"source": "skfolio"}, None) == []
    assert deps.price_files({"source": "table", "path": str(tmp_path / "missing.csv")}, None) == []
    assert deps.dataset_pin({"source": "skfolio", "dataset": "factors"}).startswith("skfolio 1.")
    assert deps.dataset_pin(tv) is None
