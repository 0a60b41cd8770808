"""An installed wheel runs outside the checkout: the Python API and the file-target pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import PROJECT

pytestmark = pytest.mark.e2e

SCRIPT = """
import json, sys
import tradingview_scraper as tvs
from tradingview_scraper import audit

assert "site-packages" in tvs.__file__, tvs.__file__
memory = tvs.run_plan("meta_demo", profiles="equal_weight,hrp")
result = tvs.run_pipeline("meta_demo", profiles="equal_weight,hrp", run_id="wheel")
for rp in memory.risk_profiles:
    flat = json.loads((result.run_dir / f"flattened_{rp}.json").read_text())
    want = {(r["symbol"], r["direction"]): r["weight"] for r in flat["weights"]}
    got = {(r["symbol"], r["direction"]): r["weight"] for r in memory.root.flattened[rp]["weights"]}
    assert got.keys() == want.keys() and all(abs(got[k] - want[k]) <= 1e-12 for k in want), rp
print(json.dumps({"package": tvs.__file__, "run_dir": str(result.run_dir), "jobs": len(result.jobs)}))
"""


def test_wheel_installed_outside_the_checkout_runs_meta_demo(tmp_path):
    # Build from a copy of the tracked files: an in-tree build would leave build/ in the checkout.
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT / rel).is_symlink():
            dest.symlink_to(os.readlink(PROJECT / rel))
        else:
            shutil.copy2(PROJECT / rel, dest)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("tradingview_scraper-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # The dependencies come from the project's environment (a plain path: its .pth files,
    # the editable install's among them, are not processed); the package only from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SCRIPT], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site)), out
    run_dir = work / out["run_dir"]
    assert run_dir.resolve() == (work / "data" / "runs" / "wheel").resolve()
    assert (run_dir / "report.html").is_file() and (run_dir / "flattened_hrp.json").is_file()
    verify = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "tradingview_scraper.audit", "verify", str(run_dir)],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
