"""Bad input is refused at the door, and every failure is one line (real runs, both entry points).

Symlinked locks, run directories and pins are refused naming the path; a refused run leaves
no run directory or lock; a pinned run with a corrupt artifact is one line; an exception of
any type inside any stage (numpy, json, pyarrow: injected into a copy of the package) is
one line naming the stage and node, from the script and as the plain ``snakemake``
command's last line; SIGTERM stops a Ray run like Ctrl-C.
"""

from __future__ import annotations

import ast
import inspect
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

from tradingview_scraper import audit
from tradingview_scraper.orchestration.cli import main

from .conftest import PROJECT, SMALL_MANIFEST
from .helpers import (
    ClusterWatch,
    copy_project,
    run_script,
    table_manifest,
    wait_gone,
    write_table_data,
)

pytestmark = pytest.mark.e2e

PROG = "run_meta_pipeline.py"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A manifest of table sleeves and a runs root holding one finished run, ``done``."""
    root = tmp_path_factory.mktemp("refusals")
    data = root / "data"
    write_table_data(data)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(table_manifest(data)))
    runs = root / "runs"
    assert main(_argv(manifest, runs, "done"), prog=PROG, require_meta=True) == 0
    return manifest, runs


def _argv(manifest: Path, runs: Path, run_id: str, profile: str = "meta_tables", *extra: str) -> list[str]:
    return ["--profile", profile, "--manifest", str(manifest), "--runs-root", str(runs), "--run-id", run_id, "--no-ray", *extra]


def _one_line(capfd, argv: list[str]) -> tuple[int, str]:
    capfd.readouterr()
    try:
        code = main(argv, prog=PROG, require_meta=True)
    except SystemExit as exc:
        code = exc.code
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{PROG}: error: "), err[0]
    return code, err[0]


def _plain(manifest: Path, runs: Path, run_id: str, profile: str = "meta_tables", cwd: Path = PROJECT, env=None):
    return subprocess.run(
        [SNAKEMAKE, "-s", "workflow/Snakefile", "--cores", "2", "--config", f"profile={profile}",
         f"manifest={manifest}", f"run_id={run_id}", f"runs_root={runs}", "ray=false"],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


# ----------------------------------------------------------------------------- symlinks


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(setup, capfd, tmp_path):
    manifest, runs = setup
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate me\n")
    run_dir = runs / "linked-lock"
    run_dir.mkdir()
    (run_dir / ".run.lock").symlink_to(precious)
    code, line = _one_line(capfd, _argv(manifest, runs, "linked-lock"))
    assert code != 0 and re.search(r"lock file \S+/linked-lock/\.run\.lock is a symlink .*refusing to follow it", line)
    assert precious.read_text() == "do not truncate me\n"
    proc = _plain(manifest, runs, "linked-lock")
    assert proc.returncode != 0
    assert re.search(r"^error: lock file \S+\.run\.lock is a symlink", proc.stderr.strip().splitlines()[-1])
    assert precious.read_text() == "do not truncate me\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock"]


def test_a_symlinked_run_directory_is_refused_and_nothing_written_through_it(setup, capfd, tmp_path):
    manifest, runs = setup
    target = tmp_path / "elsewhere"
    target.mkdir()
    (runs / "linked-dir").symlink_to(target)
    code, line = _one_line(capfd, _argv(manifest, runs, "linked-dir"))
    assert code == 2 and re.search(r"run directory \S+/linked-dir is a symlink \(to \S+elsewhere\); refusing", line)
    proc = _plain(manifest, runs, "linked-dir")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run directory ")
    assert list(target.iterdir()) == []


def test_a_symlinked_pinned_run_is_refused(setup, capfd, tmp_path, write_manifest):
    manifest, runs = setup
    (runs / "pin-link").symlink_to(runs / "done")
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_tables"]["sleeves"][0]["run_id"] = "pin-link"
    code, line = _one_line(capfd, _argv(write_manifest(m), runs, "uses-pin-link"))
    assert code == 2 and re.search(r"sleeve 'a': pinned run_id 'pin-link': run directory \S+ is a symlink", line)
    assert not (runs / "uses-pin-link").exists()


# ----------------------------------------------------------------------------- pinned runs with corrupt artifacts


def test_a_pinned_run_with_a_corrupt_returns_file_is_one_line(setup, capfd, tmp_path, write_manifest):
    manifest, runs = setup
    import shutil

    shutil.copytree(runs / "done", runs / "pin-src", copy_function=shutil.copy2)
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_tables"]["sleeves"][0]["run_id"] = "pin-src"
    pinned = write_manifest(m)
    returns = runs / "pin-src" / "sleeves" / "a" / "returns.parquet"
    returns.write_bytes(returns.read_bytes()[:10])
    code, line = _one_line(capfd, _argv(pinned, runs, "uses-corrupt-pin"))
    assert code == 2 and "sleeve 'a': pinned run_id 'pin-src'" in line and "sleeves/a/returns.parquet changed since stage sleeve" in line
    assert "rerun run 'pin-src', or pin another run" in line
    (runs / "pin-src" / "audit.jsonl").unlink()  # no ledger to vouch: the parquet reader names the file
    code, line = _one_line(capfd, _argv(pinned, runs, "uses-corrupt-pin"))
    assert code == 2 and re.search(r"\S+/pin-src/sleeves/a/returns\.parquet: cannot read as parquet: Arrow\w+: ", line), line
    assert not (runs / "uses-corrupt-pin").exists()


# ----------------------------------------------------------------------------- refused runs leave nothing


def test_refused_runs_leave_no_run_directory_or_lock(setup, capfd, tmp_path, write_manifest):
    manifest, runs = setup
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_tables"]["meta_allocation"] = {"min_weight": 0.5, "max_weight": 0.6}  # infeasible
    bad_config = write_manifest(m, "infeasible.json")
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_tables"]["sleeves"][1]["run_id"] = "ghost"
    bad_pin = write_manifest(m, "ghost.json")
    cases = {
        "config error": _argv(bad_config, runs, "refused-config"),
        "bad pin": _argv(bad_pin, runs, "refused-pin"),
        "unreachable cluster": ["--profile", "meta_tables", "--manifest", str(manifest), "--runs-root", str(runs),
                                "--run-id", "refused-ray", "--ray-address", "127.0.0.1:9"],
    }  # fmt: skip
    for name, argv in cases.items():
        code, line = _one_line(capfd, argv)
        assert code != 0, name
        assert not (runs / argv[argv.index("--run-id") + 1]).exists(), f"{name} left a run directory: {line}"
    # A lock held by a live process: the refused run touches nothing of the live one.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tradingview_scraper import runlock; "
         "runlock.acquire(sys.argv[1], 'done'); print('locked', flush=True); time.sleep(60)", str(runs / "done")],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p: p.read_bytes() for p in sorted((runs / "done").rglob("*")) if p.is_file()}
        code, line = _one_line(capfd, _argv(manifest, runs, "done"))
        assert code != 0 and "run 'done' is in progress" in line
        assert {p: p.read_bytes() for p in sorted((runs / "done").rglob("*")) if p.is_file()} == before
    finally:
        holder.kill()
        holder.communicate()


# ----------------------------------------------------------------------------- any exception in any stage: one line


# (stage, the code injected as the first statement the stage runs, expected line)
INJECTED = [
    ("flatten", "import numpy as _np; _np.linalg.inv(_np.zeros((2, 2)))",
     r"flatten \. \((equal_weight|min_variance)\): LinAlgError: Singular matrix"),
    ("report", "import json as _j; _j.loads('{bad')",
     r"report \.: JSONDecodeError: Expecting property name enclosed in double quotes"),
    ("node_returns", "import pyarrow as _pa; _pa.array([1, 'a'])",
     r"node_returns \.: Arrow\w+: "),
]  # fmt: skip


def _inject(repo: Path, stage: str, code: str) -> None:
    """Put ``code`` first in what the stage runs: inside its ``with _stage(...)`` block (a step with a
    body of its own), or first in the function its table entry names (a plain step, run by the adapter)."""
    stages_dir = repo / "tradingview_scraper" / "stages"
    pattern = re.compile(rf'^(?P<indent>\s*)with _stage\(ctx, "{stage}".*:\n', re.MULTILINE)
    found = [(path, m) for path in sorted(stages_dir.glob("*.py")) if (m := pattern.search(path.read_text()))]
    if found:
        assert len(found) == 1, stage
        path, match = found[0]
        source = path.read_text()
        path.write_text(source[: match.end()] + f"{match['indent']}    {code}\n" + source[match.end() :])
        return
    from tradingview_scraper import steps

    function = steps.step(stage).load()
    name = function.__name__
    path = repo / Path(inspect.getsourcefile(function)).relative_to(Path(steps.__file__).parents[1])  # a module or a package's file
    lines = path.read_text().splitlines(keepends=True)
    (fn,) = [n for n in ast.parse("".join(lines)).body if isinstance(n, ast.FunctionDef) and n.name == name]
    first = fn.body[1] if ast.get_docstring(fn) and len(fn.body) > 1 else fn.body[0]
    at = first.lineno - 1
    lines.insert(at, " " * first.col_offset + code + "\n")
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def buggy(tmp_path_factory):
    """A copy of the project and data to inject bugs into."""
    root = tmp_path_factory.mktemp("buggy")
    data = root / "data"
    write_table_data(data)
    (root / "manifest.json").write_text(json.dumps(table_manifest(data)))
    return root


@pytest.mark.parametrize(("stage", "code", "needle"), INJECTED, ids=[s for s, _, _ in INJECTED])
def test_any_exception_in_a_stage_is_one_line_from_both_entry_points(buggy, stage, code, needle):
    repo = copy_project(buggy / stage)
    _inject(repo, stage, code)
    proc = run_script(repo, "--profile", "meta_tables", "--manifest", "../manifest.json", "--run-id", "bug", "--no-ray")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"^{PROG}: error: {needle}", lines[0]), lines[0]

    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = _plain(buggy / "manifest.json", repo / "data" / "runs", "bug-plain", cwd=repo, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(rf"^error: {needle}", last), proc.stderr[-3000:]


# ----------------------------------------------------------------------------- SIGTERM


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigterm_stops_a_ray_run_like_ctrl_c(tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "scripts/run_meta_pipeline.py", "--profile", "meta_small", "--manifest", str(SMALL_MANIFEST),
           "--run-id", "term", "--runs-root", str(runs), "--profiles", "equal_weight,hrp"]  # fmt: skip
    driver = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(runs.glob("term/sleeves/*/logs/sleeve.log")):
            assert driver.poll() is None, driver.communicate()
            seen.update({p.pid: p for p in _descendants(driver.pid)})
            time.sleep(0.05)
        with ClusterWatch(driver.pid) as watch:
            watch.wait_for_task(driver)  # a sleeve's Ray task is running
        seen.update({p.pid: p for p in _descendants(driver.pid)})
        assert any("ray" in " ".join(p.cmdline()) for p in seen.values() if p.is_running()), "no Ray process seen"
        sent = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=90)
        stop_s = time.monotonic() - sent
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    print(f"SIGTERM to exit: {stop_s:.1f} s")
    assert driver.returncode == 143, err[-3000:]
    assert err.strip().splitlines() == [f"{PROG}: terminated (SIGTERM); rerun the same command to resume run term"], err[-3000:]
    # Handles, not PIDs (a PID may be reused); the wait ends when the last one exits.
    left = wait_gone(seen.values(), 30)
    assert left == [], f"processes outlived the terminated run: {left}"

    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert audit.verify(runs / "term") == []
