"""The one owner of a run (tradingview_scraper.owner): handed explicitly, each check done once, signals in one place."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from tradingview_scraper import cluster as ray_cluster
from tradingview_scraper import run as run_module
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.owner import RunOwner, terminated
from tradingview_scraper.run import RunContext

from .conftest import SMALL_MANIFEST


def test_the_ray_settings_are_resolved_once_into_one_cluster(monkeypatch, runs_root):
    """The runner and the workflow it drives share one Cluster: RAY_ADDRESS and the token file are read once."""
    calls = Counter()
    real = run_module.run_cluster

    def counted(*args, **kwargs):
        calls["run_cluster"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_cluster", counted)
    monkeypatch.setattr("tradingview_scraper.orchestration.pipeline.run_cluster", counted, raising=False)
    assert MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="once", runs_root=runs_root, dry_run=True).execute().jobs
    assert calls["run_cluster"] == 1


def test_the_runner_hands_its_owner_to_the_workflow(monkeypatch, runs_root):
    """The workflow the runner drives takes the runner's owner, explicitly handed over, and makes none of its own."""
    pipeline = MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="handed", runs_root=runs_root, dry_run=True)
    seen = []
    real_for_workflow = RunOwner.for_workflow.__func__

    def for_workflow(cls, config, **kwargs):
        seen.append(real_for_workflow(cls, config, **kwargs))
        return seen[-1]

    monkeypatch.setattr(RunOwner, "for_workflow", classmethod(for_workflow))
    assert pipeline.execute().jobs
    assert seen == [pipeline.owner] and pipeline.owner.cluster is seen[0].run.cluster
    assert not (runs_root / "handed").exists()  # a dry run claims nothing


def test_sigterm_is_ctrl_c_and_the_owner_puts_the_handler_back(runs_root):
    """SIGTERM cancels Ray tasks and stops the run as Ctrl-C does; releasing the run restores SIGTERM's handler."""
    previous_int, previous_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    mine = lambda signum, frame: None  # noqa: E731
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, mine)
        owner = RunOwner(RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST),
                                                 "run_id": "sig", "runs_root": str(runs_root), "ray": False}))  # fmt: skip
        owner.watch_signals()
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not mine and not terminated()
        owner.watch_signals()  # again once Snakemake's scheduler set its own: still the first handler to restore
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGTERM, None)
        assert terminated() and ray_cluster.interrupted()
        owner.release()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert terminated()  # the entry point reads it after the run ended (exit 143)
        owner.watch_signals()  # a new run forgets it
        assert not terminated() and not ray_cluster.interrupted()
        owner.release()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def test_releasing_the_lock_removes_only_an_empty_directory_taking_it_created(tmp_path):
    """A refused run leaves no directory it created; a directory that existed, or that holds more than the lock, stays."""
    from tradingview_scraper import runlock

    created, existed, written = tmp_path / "created", tmp_path / "existed", tmp_path / "written"
    existed.mkdir()
    for run_dir in (created, existed, written):
        assert runlock.acquire(run_dir, run_dir.name) is True
        if run_dir is written:
            (run_dir / "audit.jsonl").write_text("")
        runlock.release(run_dir)
    assert not created.exists()
    assert sorted(p.name for p in existed.iterdir()) == [".run.lock"]
    assert sorted(p.name for p in written.iterdir()) == [".run.lock", "audit.jsonl"]


@pytest.mark.parametrize("proc_locks", [True, False], ids=["proc-locks", "no-proc-locks"])
def test_the_lock_holder_is_found_with_and_without_the_kernels_lock_table(proc_locks, tmp_path, monkeypatch):
    """``runlock.holder`` names another live holder's pid from /proc/locks, or (where there is none) by a shared lock."""
    import subprocess
    import sys
    from pathlib import Path

    from tradingview_scraper import runlock

    if not proc_locks:
        real = Path.read_text
        monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: (_ for _ in ()).throw(OSError("none"))
                            if str(p) == "/proc/locks" else real(p, *a, **k))  # fmt: skip
    run_dir = tmp_path / "held"
    assert runlock.holder(run_dir) is None  # no lock file: nobody
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tradingview_scraper import runlock; "
         "runlock.acquire(sys.argv[1], 'held'); print('locked', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert runlock.holder(run_dir) == str(holder.pid)
    finally:
        holder.kill()
        holder.communicate()
    assert runlock.holder(run_dir) is None  # the kernel released it with the process
    assert runlock.acquire(run_dir, "held") is True and runlock.holder(run_dir) is None  # this process: not another
    runlock.release(run_dir)


def test_a_run_directory_or_lock_path_that_is_not_a_regular_file_is_refused_in_one_line(tmp_path):
    """A run id naming a file, or a lock path that is a directory, is a ConfigError naming it; nothing is changed."""
    from tradingview_scraper import runlock
    from tradingview_scraper.errors import ConfigError

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match=r"run directory \S+/afile is a file; choose another run id"):
        runlock.check_run_dir(tmp_path / "afile", "afile")
    (tmp_path / "r" / ".run.lock").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"cannot open lock file \S+/r/\.run\.lock: .+; it must be a regular file"):
        runlock.acquire(tmp_path / "r", "r")
    assert (tmp_path / "afile").read_text() == "mine" and (tmp_path / "r" / ".run.lock").is_dir()
    assert runlock.holder(tmp_path / "r") is None  # not a lock: nobody holds it
