"""Sleeves on Ray through the real pipeline: cluster lifecycle, resources, fail-fast, modes, two nodes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from tradingview_scraper.errors import ConfigError, SleeveError
from tradingview_scraper.orchestration import compute
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import PROJECT
from .test_compute import _wait_gone

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

SP500 = {
    "a": ["AAPL", "MSFT", "AMD"],
    "b": ["KO", "PEP", "PG"],
    "c": ["JPM", "BAC", "GE"],
    "d": ["CVX", "XOM", "RRC"],
}
MANIFEST = {
    "defaults": {
        "data": {
            "source": "skfolio",
            "dataset": "sp500",
            "start": "2019-01-01",
            "end": "2021-12-31",
        },
        "backtest": {
            "train_window": 126,
            "test_window": 21,
            "commission": 0.0005,
            "slippage": 0.0005,
        },
        "meta_allocation": {"min_weight": 0.1, "max_weight": 0.6},
        "profiles": ["equal_weight", "hrp"],
    },
    "profiles": {
        **{sid: {"universe": {"symbols": symbols}} for sid, symbols in SP500.items()},
        # 'NOPE' is not in the dataset: the sleeve raises when its prices load, on the worker.
        "bad": {"universe": {"symbols": ["JNJ", "LLY", "NOPE"]}},
        # A long history: sleeves still run when the test interrupts them.
        **{
            f"slow_{s}": {"universe": {"symbols": SP500[s]}, "data": {"start": "2000-01-01"}}
            for s in "ab"
        },
        "meta_four": {"sleeves": [{"id": s, "profile": s} for s in SP500]},
        "meta_pinned": {"sleeves": [{"id": s, "profile": s, "run_id": "cmp"} for s in SP500]},
        "meta_ab": {"sleeves": [{"id": s, "profile": s} for s in "ab"]},
        "meta_pair": {"sleeves": [{"id": "a", "profile": "a"}, {"id": "bad", "profile": "bad"}]},
        "meta_slow": {"sleeves": [{"id": s, "profile": f"slow_{s}"} for s in "ab"]},
    },
}
# Where a sleeve ran: differs between modes and runs by design.
WORKER_FIELDS = {"tasks", "address", "mode"}
# A second `ray start --address` node on this machine: `ray start` refuses to join a cluster
# while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps every listener on loopback) and
# would rewrite 127.0.0.1 to the external IP otherwise; lift only the guard, in the launcher.
JOIN_NODE = (
    "import sys\n"
    "from ray._private import ray_constants, services\n"
    "ray_constants.ENABLE_RAY_CLUSTER = True\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "main()\n"
)


# ----------------------------------------------------------------------------- helpers


class ClusterWatch:
    """Records every private Ray head a driver process starts, its whole session and reaper.

    A head is a ``ray start --head`` child of the driver that did not exist before the
    watch; every process whose session id is a head's PID belongs to that cluster.
    """

    def __init__(self, driver_pid: int) -> None:
        self.driver = driver_pid
        self.before = set(psutil.pids())
        self.heads: dict[int, Path] = {}  # head PID -> the run's temp dir
        self.reapers: set[int] = set()
        self.members: set[int] = set()
        self.tasks: set[str] = set()  # titles of workers seen executing a sleeve task
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def _poll(self) -> None:
        while not self._stop.wait(0.15):
            self._scan()

    def _scan(self) -> None:
        procs = [p.info for p in psutil.process_iter(["pid", "ppid", "cmdline"])]
        for info in procs:
            cmd = info["cmdline"] or []
            if info["ppid"] != self.driver or info["pid"] in self.before:
                continue
            if "--head" in cmd:
                temp = next(a.split("=", 1)[1] for a in cmd if a.startswith("--temp-dir="))
                self.heads[info["pid"]] = Path(temp).parent
            elif "--reap" in cmd:
                self.reapers.add(info["pid"])
        for info in procs:
            try:
                sid = os.getsid(info["pid"])
            except OSError:
                continue
            if sid in self.heads:
                self.members.add(info["pid"])
                title = (info["cmdline"] or [""])[0]
                if title.startswith("ray::sleeve:"):
                    self.tasks.add(title)

    def wait_for_task(self, proc: subprocess.Popen, timeout_s: float = 90) -> None:
        """Wait until a worker of the driver's cluster executes a sleeve task."""
        deadline = time.monotonic() + timeout_s
        while not self.tasks:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no sleeve task ever ran on the driver's cluster"
            time.sleep(0.1)

    def assert_gone(self, heads: int = 1, timeout_s: float = 15) -> None:
        """Exactly ``heads`` heads were started; every process of theirs and their files are gone."""
        assert len(self.heads) == heads, self.heads
        tracked = set(self.heads) | self.members | self.reapers
        assert _wait_gone(tracked, timeout_s) == []
        assert [d for d in self.heads.values() if d.exists()] == []


def _env_without_ray() -> dict[str, str]:
    """This environment minus any cluster address or auth setting (a run starts its own)."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    return env


def _audit(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]


def _intervals(run_dir: Path, stage: str) -> list[tuple[float, float, str]]:
    """(start, end, node) in epoch seconds of every successful ``stage`` entry of the ledger."""
    spans = []
    for entry in _audit(run_dir):
        if entry.get("stage") == stage and entry.get("outcome") == "success":
            end = pd.Timestamp(entry["time"]).timestamp()
            spans.append((end - entry["duration_s"], end, entry["node"]))
    return spans


def _max_overlap(spans) -> int:
    events = sorted(
        [(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans], key=lambda x: (x[0], x[1])
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _provenance(run_dir: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(run_dir.glob("sleeves/*/provenance.json"))
    }


def _tasks(prov: dict[str, dict]) -> list[dict]:
    """Where each risk profile's task of every sleeve ran."""
    return [task for p in prov.values() for task in p["tasks"].values()]


def _artifacts(run_dir: Path) -> dict[str, Path]:
    """Parquet and JSON artifacts of a run (logs, the ledger and the report excluded)."""
    return {
        p.relative_to(run_dir).as_posix(): p
        for p in run_dir.rglob("*")
        if p.suffix in {".parquet", ".json"}
        and "logs" not in p.parts
        and not p.name.startswith(".")
    }


def _same_json(left, right, where: str) -> None:
    if isinstance(left, dict):
        assert isinstance(right, dict) and set(left) == set(right), where
        for key in left:
            _same_json(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right), where
        for i, (x, y) in enumerate(zip(left, right, strict=True)):
            _same_json(x, y, f"{where}[{i}]")
    elif isinstance(left, float) or isinstance(right, float):
        np.testing.assert_allclose(right, left, rtol=1e-9, atol=1e-12, err_msg=where)
    else:
        assert left == right, where


def assert_same_artifacts(left: Path, right: Path) -> None:
    """Both runs hold the same artifacts with equal contents (tolerance 1e-9)."""
    a, b = _artifacts(left), _artifacts(right)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("meta/") for k in a) and any(k.startswith("sleeves/") for k in a)
    for name, path in a.items():
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(
                pd.read_parquet(b[name]),
                pd.read_parquet(path),
                check_exact=False,
                rtol=1e-9,
                atol=1e-12,
            )
            continue
        x, y = json.loads(path.read_text()), json.loads(b[name].read_text())
        if path.name == "provenance.json":
            x, y = ({k: v for k, v in d.items() if k not in WORKER_FIELDS} for d in (x, y))
        _same_json(x, y, name)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_text(json.dumps(MANIFEST, indent=2))
    return path


@pytest.fixture(scope="module")
def ray_run(manifest, tmp_path_factory):
    """meta_four, every sleeve recomputed on a private cluster, watched; 4 cores for 2 cluster CPUs."""
    root = tmp_path_factory.mktemp("ray")
    with ClusterWatch(os.getpid()) as watch:
        result = MetaPipeline(
            "meta_four",
            manifest=manifest,
            run_id="cmp",
            runs_root=root,
            cores=4,
            execute_sleeves=True,
        ).execute()
    return result, watch


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A real two-node cluster on loopback (1 CPU each), token auth; stopped by PID at the end."""
    temp = Path(tempfile.mkdtemp(prefix="tvm", dir="/tmp"))  # short: Ray's unix sockets live below
    token_path = temp / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    token = token_path.read_text()
    port = compute._free_port()
    address = f"127.0.0.1:{port}"
    env = compute._node_env(token_path)
    nodes: list[subprocess.Popen] = []
    try:
        with open(temp / "head.log", "wb") as log:
            nodes.append(
                subprocess.Popen(
                    compute._head_command(port, 1, temp / "h"),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with open(temp / "node.log", "wb") as log:
            join = [
                sys.executable, "-c", JOIN_NODE, "start", "--block", f"--address={address}",
                "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp / 'n'}",
            ]  # fmt: skip
            nodes.append(
                subprocess.Popen(
                    join, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.monotonic() + 120
        while True:
            for node, name in zip(nodes, ("head.log", "node.log"), strict=True):
                assert node.poll() is None, (temp / name).read_text()[-3000:]
            try:
                if compute._alive_nodes(address, token) == 2:
                    break
            except Exception:  # the GCS is still starting
                pass
            assert time.monotonic() < deadline, "the two-node cluster did not come up"
            time.sleep(0.2)
        yield {"address": address, "token_path": token_path, "token": token, "nodes": nodes}
    finally:
        for node in reversed(nodes):
            compute._kill_session(node.pid, 10.0, leader=node)
        shutil.rmtree(temp, ignore_errors=True)


def _use_cluster(mp: pytest.MonkeyPatch, cluster: dict, *, via_env: bool) -> None:
    """Give this process the external cluster's auth settings (and its address, if ``via_env``)."""
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    mp.setenv("RAY_AUTH_MODE", "token")
    mp.setenv("RAY_AUTH_TOKEN_PATH", str(cluster["token_path"]))
    mp.delenv("RAY_AUTH_TOKEN", raising=False)
    if via_env:
        mp.setenv("RAY_ADDRESS", cluster["address"])
    else:
        mp.delenv("RAY_ADDRESS", raising=False)


# ----------------------------------------------------------------------------- cheap checks


def test_private_cluster_cannot_oversubscribe_the_machine(manifest, tmp_path):
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(
        ConfigError, match=rf"num_cpus={too_many} \(config ray_num_cpus\) exceeds this machine's"
    ):
        MetaPipeline("meta_four", manifest=manifest, runs_root=tmp_path, ray_num_cpus=too_many)


def test_sleeve_needing_more_cpus_than_the_private_cluster_fails_before_it_starts(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = compute.RayBackend(num_cpus=1)
    with pytest.raises(SleeveError, match=r"sleeve 'big' needs num_cpus=2 .* has 1 CPUs"):
        backend.run(np.sum, [1], name="big", num_cpus=2)
    assert backend.info()["started"] is False


def test_sigint_handler_chains_to_the_previous_one():
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        compute.watch_interrupts()
        handler = signal.getsignal(signal.SIGINT)
        compute.watch_interrupts()
        assert signal.getsignal(signal.SIGINT) is handler  # idempotent: wrapped once
        assert not compute.interrupted()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        assert compute.interrupted()
        with pytest.raises(SleeveError, match=r"sleeve 'x' not started: the run was interrupted"):
            compute.RayBackend(num_cpus=1).run(np.sum, [1], name="x")
        compute.watch_interrupts()
        assert not compute.interrupted()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job: stays ignored
        compute.watch_interrupts()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- one private cluster per run


def test_run_starts_one_private_cluster_and_stops_it(ray_run):
    result, watch = ray_run
    watch.assert_gone(heads=1)
    prov = _provenance(result.run_dir)
    assert sorted(prov) == sorted(SP500)
    assert {p["mode"] for p in prov.values()} == {"private"}
    assert len({p["address"] for p in prov.values()}) == 1
    assert all(sorted(p["tasks"]) == ["equal_weight", "hrp"] for p in prov.values())
    assert {t["node_ip"] for t in _tasks(prov)} == {"127.0.0.1"}
    assert os.getpid() not in {t["worker_pid"] for t in _tasks(prov)}


def test_sleeve_jobs_never_exceed_the_cluster_cpus(ray_run):
    result, _ = ray_run
    spans = _intervals(result.run_dir, "sleeve")
    assert len(spans) == 4
    assert _max_overlap(spans) <= 2  # 4 cores, but the private cluster has 2 CPUs


def test_every_sleeve_finishes_on_ray_before_meta_returns_starts(ray_run):
    result, _ = ray_run
    sleeves, meta = _intervals(result.run_dir, "sleeve"), _intervals(result.run_dir, "meta_returns")
    assert len(sleeves) == 4 and len(meta) == 1
    assert max(end for _, end, _ in sleeves) <= min(start for start, _, _ in meta)
    stages = [
        e.get("stage")
        for e in _audit(result.run_dir)
        if e.get("stage") in {"sleeve", "meta_returns"}
    ]
    assert stages == ["sleeve"] * 4 + ["meta_returns"]
    durations = {node.split("/")[-1]: end - start for start, end, node in sleeves}
    for sid, p in _provenance(result.run_dir).items():  # the Ray task ran inside its job
        assert all(0 < t["duration_s"] <= durations[sid] for t in p["tasks"].values())


def test_up_to_date_rerun_and_all_pinned_run_start_no_cluster(ray_run, manifest):
    result, _ = ray_run
    with ClusterWatch(os.getpid()) as watch:
        rerun = MetaPipeline(
            "meta_four", manifest=manifest, run_id="cmp", runs_root=result.run_dir.parent
        ).execute()
        pinned = MetaPipeline(
            "meta_pinned", manifest=manifest, run_id="pinned", runs_root=result.run_dir.parent
        ).execute()
    # execute_sleeves is part of the resolved manifest: only that record is rewritten
    assert {job.rule for job in rerun.jobs} <= {"resolved_manifest", "all"}
    rules = [job.rule for job in pinned.jobs]
    assert rules.count("pinned_sleeve") == 4 and "sleeve" not in rules and "flatten" in rules
    watch.assert_gone(heads=0)


def test_sequential_mode_produces_the_same_artifacts(ray_run, manifest, tmp_path):
    result, _ = ray_run
    with ClusterWatch(os.getpid()) as watch:
        seq = MetaPipeline(
            "meta_four", manifest=manifest, run_id="cmp", runs_root=tmp_path, ray=False
        ).execute()
    watch.assert_gone(heads=0)
    assert {p["mode"] for p in _provenance(seq.run_dir).values()} == {"sequential"}
    assert_same_artifacts(result.run_dir, seq.run_dir)


# ----------------------------------------------------------------------------- an external two-node cluster


def test_two_node_cluster_runs_sleeves_on_both_nodes_and_is_left_running(
    ray_run, two_nodes, manifest, tmp_path
):
    result, _ = ray_run
    with pytest.MonkeyPatch.context() as mp:
        _use_cluster(mp, two_nodes, via_env=False)
        with ClusterWatch(os.getpid()) as watch:
            ext = MetaPipeline(
                "meta_four",
                manifest=manifest,
                run_id="cmp",
                runs_root=tmp_path,
                cores=4,
                ray_address=two_nodes["address"],
            ).execute()
    watch.assert_gone(heads=0)  # nothing private was started
    prov = _provenance(ext.run_dir)
    assert {p["mode"] for p in prov.values()} == {"external"}
    assert {p["address"] for p in prov.values()} == {two_nodes["address"]}
    assert len({t["node_id"] for t in _tasks(prov)}) == 2, prov  # 1 CPU per node, tasks on both
    # At most the cluster's 2 CPUs (the runner asked it) though 4 cores were given.
    assert _max_overlap(_intervals(ext.run_dir, "sleeve")) <= 2
    assert_same_artifacts(result.run_dir, ext.run_dir)
    assert [node.poll() for node in two_nodes["nodes"]] == [None, None]
    assert compute._alive_nodes(two_nodes["address"], two_nodes["token"]) == 2
    members = [pid for node in two_nodes["nodes"] for pid in compute._session_pids(node.pid)]
    listening = {c.laddr.ip for pid in members for c in _connections(pid) if c.status == "LISTEN"}
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def _connections(pid: int) -> list:
    try:
        return psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []


# ----------------------------------------------------------------------------- interrupts, kills, the plain command


def _start_driver(manifest: Path, runs_root: Path, run_id: str) -> subprocess.Popen:
    cmd = [
        sys.executable, str(PROJECT / "scripts/run_meta_pipeline.py"), "--profile", "meta_slow",
        "--manifest", str(manifest), "--runs-root", str(runs_root), "--run-id", run_id, "--cores", "2",
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        cwd=PROJECT,
        env=_env_without_ray(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigint_stops_the_run_promptly_and_a_sigkilled_driver_leaves_no_cluster(manifest, tmp_path):
    """Two drivers side by side (their heads must not clash): one gets SIGKILL, one Ctrl-C."""
    killed = _start_driver(manifest, tmp_path, "sigkill")
    stopped = _start_driver(manifest, tmp_path, "sigint")
    drivers = (killed, stopped)
    with ClusterWatch(killed.pid) as killed_watch, ClusterWatch(stopped.pid) as stopped_watch:
        try:
            killed_watch.wait_for_task(killed)
            killed.kill()
            stopped_watch.wait_for_task(stopped)
            sent = time.monotonic()
            stopped.send_signal(signal.SIGINT)
            _, stderr = stopped.communicate(timeout=60)
            stopped_s = time.monotonic() - sent
        finally:
            for driver in drivers:
                if driver.poll() is None:
                    driver.kill()
                driver.communicate()
    print(f"SIGINT to exit: {stopped_s:.1f} s")
    killed_watch.assert_gone(heads=1, timeout_s=20)  # the reaper stops the head's whole session
    assert stopped.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    assert stopped_s < 15, f"SIGINT took {stopped_s:.1f} s to stop the run"
    stopped_watch.assert_gone(heads=1, timeout_s=5)
    assert not (tmp_path / "sigint/meta").exists()
    assert not list((tmp_path / "sigint/sleeves").glob("*/returns.parquet"))


def _plain_command(manifest: Path, run_id: str, cores: int) -> tuple[int, str, ClusterWatch]:
    """Run meta_pair with the plain ``snakemake`` command, watched: (exit code, output, watch)."""
    cmd = [
        str(Path(sys.executable).with_name("snakemake")), "-s", "workflow/Snakefile", "--cores", str(cores), "--config",
        "profile=meta_pair", f"manifest={manifest}", f"runs_root={manifest.parent}", f"run_id={run_id}",
    ]  # fmt: skip
    driver = subprocess.Popen(
        cmd, cwd=PROJECT, env=_env_without_ray(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with ClusterWatch(driver.pid) as watch:
        output, _ = driver.communicate(timeout=180)
    return driver.returncode, output, watch


def test_plain_command_refused_by_the_pre_flight_check_starts_no_cluster(tmp_path):
    """The head starts in onstart after the checks: a run with a missing data file starts none."""
    manifest = tmp_path / "manifest.json"
    broken = json.loads(json.dumps(MANIFEST))
    broken["profiles"]["bad"]["data"] = {"source": "table", "path": str(tmp_path / "nope.csv")}
    manifest.write_text(json.dumps(broken))
    code, output, watch = _plain_command(manifest, "refused", cores=2)
    assert code != 0 and "price table not found" in output, output[-3000:]
    watch.assert_gone(heads=0)
    assert not (tmp_path / "refused").exists()


def test_failing_sleeve_stops_the_plain_command_before_meta_and_a_rerun_recomputes_only_it(
    two_nodes, tmp_path
):
    """The plain snakemake command (its hooks stop the cluster); the fixed rerun goes to RAY_ADDRESS."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    code, output, watch = _plain_command(manifest, "ff", cores=3)
    assert code != 0, output[-3000:]
    watch.assert_gone(heads=1)
    tail = output[-3000:]
    # Every sleeve job reserves ray_cpus; the command knows the private cluster's CPUs.
    assert re.search(rf"Provided resources: .*ray_cpus\D+{os.cpu_count()}\b", output), tail
    assert re.search(r"sleeve 'bad' \(\w+\) failed: DataError: [^\n]*'NOPE' not found", output), tail
    run_dir = tmp_path / "ff"
    assert not (run_dir / "meta").exists() and not list(run_dir.glob("flattened_*.json"))
    assert not (run_dir / "report.md").exists()
    assert not (run_dir / "sleeves/bad/returns.parquet").exists()
    kept = {p: p.stat().st_mtime_ns for p in (run_dir / "sleeves/a").iterdir() if p.is_file()}
    assert run_dir / "sleeves/a/returns.parquet" in kept  # the healthy sleeve finished and stays

    fixed = json.loads(json.dumps(MANIFEST))
    fixed["profiles"]["bad"]["universe"]["symbols"] = ["JNJ", "LLY", "MRK"]
    manifest.write_text(json.dumps(fixed))
    with pytest.MonkeyPatch.context() as mp:
        _use_cluster(mp, two_nodes, via_env=True)
        rerun = MetaPipeline(
            "meta_pair", manifest=manifest, run_id="ff", runs_root=tmp_path
        ).execute()
    sleeve_jobs = [job for job in rerun.jobs if job.rule == "sleeve"]
    assert [Path(job.wildcards["node"]).name for job in sleeve_jobs] == ["bad"]
    assert {"meta_returns", "flatten", "report"} <= {job.rule for job in rerun.jobs}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert _provenance(run_dir)["bad"]["address"] == two_nodes["address"]
    assert compute._alive_nodes(two_nodes["address"], two_nodes["token"]) == 2  # left running
