"""The unchanged workflow on a real single-node SLURM cluster (scripts/slurm.sh), against a local run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import audit

from .conftest import PROJECT

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def slurm():
    """The cluster of `make slurm-up` (started here if it is not up; then stopped here too)."""
    if os.geteuid() != 0 or not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("a SLURM cluster needs root, and slurm-wlm installed or apt-get to install it")
    was_up = shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True).returncode == 0
    subprocess.run([str(PROJECT / "scripts/slurm.sh"), "up"], check=True, timeout=600)
    yield
    if not was_up:
        subprocess.run([str(PROJECT / "scripts/slurm.sh"), "down"], check=True, timeout=60)


def test_meta_demo_on_slurm_equals_a_local_run_on_one_cluster(slurm, demo_run, tmp_path):
    """No run id, a bare environment: every job learns the run id and the cluster from its config."""
    runs = tmp_path / "slurm"
    bare = {"HOME": os.environ.get("HOME", "/root"), "PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    cmd = [
        str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--executor", "slurm",
        "--workflow-profile", "workflow/profiles/slurm", "--config", "profile=meta_demo", f"runs_root={runs}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=PROJECT, env=bare, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    [run_dir] = [p for p in runs.iterdir() if p.name != ".store"]  # one run id for the whole run (and the node store)
    assert audit.verify(run_dir) == []

    prov = [json.loads(p.read_text()) for p in sorted(run_dir.glob("sleeves/*/provenance.json"))]
    assert len(prov) == 3
    assert {p["run_id"] for p in prov} == {run_dir.name}
    assert len({p["address"] for p in prov}) == 1 and {p["mode"] for p in prov} == {"private"}
    pids = {t["worker_pid"] for p in prov for t in p["tasks"].values()}
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)  # the cluster went with the run

    local = demo_run  # the shared local run of meta_demo (conftest.py), run id "demo-local"
    flattened = sorted(p.name for p in run_dir.glob("flattened_*.json"))
    assert len(flattened) == 4 and flattened == sorted(p.name for p in local.glob("flattened_*.json"))
    for name in flattened:
        a, b = (json.loads((d / name).read_text()) for d in (run_dir, local))
        assert a["sleeve_weights"].keys() == b["sleeve_weights"].keys()
        np.testing.assert_allclose(list(a["sleeve_weights"].values()), list(b["sleeve_weights"].values()), rtol=1e-9)
        rows = {(w["symbol"], w["direction"]): w["weight"] for w in a["weights"]}
        assert rows.keys() == {(w["symbol"], w["direction"]) for w in b["weights"]}
        np.testing.assert_allclose([rows[(w["symbol"], w["direction"])] for w in b["weights"]],
                                   [w["weight"] for w in b["weights"]], rtol=1e-9)  # fmt: skip
    meta = sorted(p.name for p in (run_dir / "meta").glob("returns_*.parquet"))
    assert meta and meta == sorted(p.name for p in (local / "meta").glob("returns_*.parquet"))
    for name in meta:
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "meta" / name), pd.read_parquet(local / "meta" / name),
                                      check_exact=False, rtol=1e-9)  # fmt: skip
    # The report's numbers (its text) are the same, but for where each run lives and its id.
    assert (run_dir / "report.md").read_text().replace(str(run_dir), "RUN").replace(run_dir.name, "ID") == (
        local / "report.md"
    ).read_text().replace(str(local), "RUN").replace(local.name, "ID")
