"""Interrupted, concurrent and repeated runs: kill -9 and resume, run locks, determinism, hygiene."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tradingview_scraper import audit, runlock
from tradingview_scraper.errors import RunInProgressError
from tradingview_scraper.layout import write_json

from .conftest import PROJECT, SMALL_MANIFEST
from .helpers import (
    LOOPBACK,
    alive,
    assert_same_artifacts,
    cluster_members,
    environ,
    listening,
    processes,
    wait_gone,
)

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

PACKAGE = PROJECT / "tradingview_scraper"
SCRIPT = "scripts/run_meta_pipeline.py"
SLEEVES = ("tech", "staples", "factors")


def _command(run_id: str, runs_root: Path, *extra: str) -> list[str]:
    # every run computes (--no-reuse): the runs of one root share the node store, and these compare computations
    return [sys.executable, SCRIPT, "--profile", "meta_small", "--manifest", str(SMALL_MANIFEST),
            "--run-id", run_id, "--runs-root", str(runs_root), "--profiles", "equal_weight,hrp", "--no-reuse", *extra]  # fmt: skip


def _start(run_id: str, runs_root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        _command(run_id, runs_root, *extra), cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    # The timeouts here only guard against a hang: on a loaded machine a run takes minutes.
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _no_partial_writes(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.rglob("*.tmp")]


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory):
    """Two clean runs of meta_small started at the same moment: ``ray`` (Ray) and ``local`` (--no-ray)."""
    root = tmp_path_factory.mktemp("runs")
    t0 = time.monotonic()
    procs = {"ray": _start("ray", root), "local": _start("local", root, "--no-ray")}
    results = {name: _finish(proc) for name, proc in procs.items()}
    print(f"two concurrent clean runs: {time.monotonic() - t0:.1f} s")
    return root, results


def test_concurrent_runs_with_different_ids_both_succeed(clean_runs):
    root, results = clean_runs
    for name, (code, err) in results.items():
        assert code == 0, f"run {name}: {err}"
        assert (root / name / "report.html").is_file() and _no_partial_writes(root / name) == []
    ray_prov = json.loads((root / "ray/sleeves/tech/provenance.json").read_text())
    assert ray_prov["mode"] == "private" and {t["node_ip"] for t in ray_prov["tasks"].values()} == {"127.0.0.1"}
    assert audit.verify(root / "ray") == [] and audit.verify(root / "local") == []


def test_two_clean_runs_are_identical(clean_runs):
    """Determinism: the same manifest gives the same artifacts, on Ray or in-process alike."""
    root, results = clean_runs
    assert all(code == 0 for code, _ in results.values())
    assert_same_artifacts(root / "ray", root / "local")


def _wait_for_partial_sleeves(run_dir: Path, driver: subprocess.Popen, timeout: float = 600) -> int:
    """Wait until some but not all sleeves are written; return how many are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()[1]
        done = sum((run_dir / "sleeves" / s / "returns.parquet").exists() for s in SLEEVES)
        if 0 < done < len(SLEEVES):
            return done
        assert done == 0, "every sleeve finished before the driver could be killed"
        time.sleep(0.01)
    raise AssertionError("no sleeve finished in time")


def test_kill_9_then_rerun_resumes_and_equals_a_clean_run(clean_runs):
    root, results = clean_runs
    run_dir = root / "killed"
    driver = _start("killed", root)
    rerun: subprocess.Popen | None = None
    tracked: list[psutil.Process] = []
    try:
        done = _wait_for_partial_sleeves(run_dir, driver)
        os.kill(driver.pid, signal.SIGSTOP)  # freeze the driver: its files cannot change now
        # Its private cluster, by token dir; handles, not PIDs: the rerun below starts processes
        # while these exit, and a PID can be reused.
        tracked = processes(cluster_members(f"/tmp/tvr-{driver.pid}-"))
        assert len(tracked) >= 4, "a Ray run has a GCS, a raylet, agents and workers"
        sockets = listening(p.pid for p in tracked)
        assert sockets and {ip for _, ip, _ in sockets} <= LOOPBACK, sockets
        modes = {p.pid: environ(p.pid).get("RAY_AUTH_MODE") for p in tracked}  # None: exited meanwhile
        assert {m for m in modes.values() if m is not None} == {"token"}, modes

        before = _snapshot(run_dir)
        code, err = _finish(_start("killed", root))  # the same command while the first is live
        assert code != 0
        assert err.strip().splitlines() == [err.strip()], err
        assert "run 'killed' is in progress" in err
        assert _snapshot(run_dir) == before, "a refused run must not touch the live run's files"

        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=30)
        assert done < len(SLEEVES) and not (run_dir / "report.html").exists()
        print(f"killed with {done} of {len(SLEEVES)} sleeves written")
        # The rerun starts at once, while the killed run's agents may still be exiting: it
        # needs nothing of the dead cluster, and the wait below overlaps with it.
        rerun = _start("killed", root)
        # Ray's fate-sharing: the GCS and raylet die with the driver, their agents within a minute.
        assert wait_gone(tracked, 100) == [], "Ray processes outlived the killed driver"
        code, err = _finish(rerun)
    finally:
        for proc in (driver, rerun):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        for pid in alive(tracked):  # only our own leftovers, by PID
            os.kill(pid, signal.SIGKILL)

    assert code == 0, err
    assert _no_partial_writes(run_dir) == []
    assert results["ray"][0] == 0
    assert_same_artifacts(run_dir, root / "ray")


def test_plain_snakemake_takes_the_same_lock(tmp_path):
    """`snakemake -s workflow/Snakefile` refuses a run id another live process holds, touching nothing."""
    runs = tmp_path / "runs"
    run_dir = runs / "held"
    write_json(run_dir / "manifest.resolved.json", {"run_id": "held"})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tradingview_scraper import runlock; "
         "runlock.acquire(sys.argv[1], 'held'); print('locked', flush=True); time.sleep(120)", str(run_dir)],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run_dir)
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "snakemake"), "-s", "workflow/Snakefile", "--cores", "1", "--config",
             "profile=meta_small", f"manifest={SMALL_MANIFEST}", "run_id=held", f"runs_root={runs}"],
            cwd=PROJECT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "run 'held' is in progress" in proc.stderr
        assert _snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.communicate()


def test_lock_of_a_dead_owner_is_taken_and_its_partial_writes_removed(tmp_path):
    run_dir = tmp_path / "r"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tradingview_scraper import runlock; "
         "runlock.acquire(sys.argv[1], 'r'); print('locked', flush=True); time.sleep(120)", str(run_dir)],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(RunInProgressError, match=rf"run 'r' is in progress \(pid {owner.pid} holds"):
            runlock.acquire(run_dir, "r")
        partial = run_dir / "sleeves" / "a" / ".returns.parquet.x1y2.tmp"  # what a kill mid-write leaves
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"PAR1 half a file")
    finally:
        owner.kill()
        owner.communicate()
    assert runlock.acquire(run_dir, "r") is True
    try:
        assert runlock.acquire(run_dir, "r") is False, "re-entrant within one process"
        assert not partial.exists()
    finally:
        runlock.release(run_dir)


# ----------------------------------------------------------------------------- static guarantees


def _package_sources() -> dict[str, str]:
    files = [*PACKAGE.rglob("*.py"), *(PROJECT / "workflow").rglob("*.smk"), PROJECT / "workflow" / "Snakefile"]
    return {p.relative_to(PROJECT).as_posix(): p.read_text() for p in files}


def test_nothing_unpickles():
    pattern = re.compile(r"\b(pickle|cPickle|dill|joblib|cloudpickle|shelve)\b|read_pickle|allow_pickle\s*=\s*True")
    hits = [f"{name}:{i}: {line.strip()}" for name, text in _package_sources().items()
            for i, line in enumerate(text.splitlines(), 1)
            if pattern.search(line) and not line.lstrip().startswith(("#", '"""')) and "no pandas pickle" not in line]  # fmt: skip
    assert hits == []


# Every line of the package that can write a file, and why each is allowed; anything else
# writing a file bypasses layout's atomic writers (temp file + fsync + rename).
WRITE = re.compile(r"\.to_parquet\(|\.to_csv\(|\.to_json\(|\.to_pickle\(|\.write_text\(|\.write_bytes\(|"
                   r"json\.dump\(|savefig\(|\.save\(|shutil\.(copy|move)|os\.rename\(|open\([^)]*['\"][wax]b?\+?['\"]|"
                   r"fdopen\(|O_WRONLY|O_RDWR|FileHandler\(")  # fmt: skip
ALLOWED_WRITES = {
    "tradingview_scraper/layout/_io.py": ['os.fdopen(fd, "wb")'],  # the atomic writer itself
    "tradingview_scraper/audit/_ledger.py": ["O_APPEND", 'ledger.name + ".lock"'],  # append-only ledger + its flock file
    "tradingview_scraper/runlock.py": ["os.open(path, os.O_RDWR"],  # the run's lock file
    "tradingview_scraper/stages/_common.py": ["logging.FileHandler(logfile"],  # per-stage logs (not artifacts)
    "tradingview_scraper/report/_figures.py": [".save(buf,"],  # PNGs into memory; written by atomic_write_bytes
    "tradingview_scraper/backtest.py": ["fits.save()"],  # the window store's file, by layout.write_store_file
    # the token of the run's private Ray cluster, in its private temp dir
    "tradingview_scraper/cluster/_cluster.py": ["os.open(token_path, os.O_WRONLY", 'os.fdopen(fd, "w")'],
}


def test_every_artifact_write_goes_through_layout():
    bypass = [
        f"{name}: {line.strip()}"
        for name, text in _package_sources().items()
        for line in text.splitlines()
        if WRITE.search(line) and not any(ok in line for ok in ALLOWED_WRITES.get(name, []))
    ]
    assert bypass == []
