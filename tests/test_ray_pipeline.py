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
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import cluster as ray_cluster
from tradingview_scraper.cluster import Cluster
from tradingview_scraper.errors import ConfigError, SleeveError
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import PROJECT
from .helpers import (
    LOOPBACK,
    ClusterWatch,
    alive,
    assert_same_artifacts,
    cluster_members,
    listening,
)

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
        # A long history and a window every 5 days: sleeves still run when the test interrupts them.
        **{
            f"slow_{s}": {"universe": {"symbols": SP500[s]}, "data": {"start": "1995-01-01"},
                          "backtest": {"test_window": 5}}
            for s in "ab"
        },
        "meta_four": {"sleeves": [{"id": s, "profile": s} for s in SP500]},
        "meta_pinned": {"sleeves": [{"id": s, "profile": s, "run_id": "cmp"} for s in SP500]},
        "meta_ab": {"sleeves": [{"id": s, "profile": s} for s in "ab"]},
        "meta_pair": {"sleeves": [{"id": "a", "profile": "a"}, {"id": "bad", "profile": "bad"}]},
        "meta_slow": {"sleeves": [{"id": s, "profile": f"slow_{s}"} for s in "ab"], "backtest": {"test_window": 5}},
    },
}
# A two-node cluster on 127.0.0.1 (1 CPU each), Ray's documented multi-node test utility, run
# in a mount namespace of its own where the price data and the project's source are hidden
# (empty tmpfs mounts): its workers get the code through runtime_env and the prices with
# their tasks, or they fail.
TWO_NODES = textwrap.dedent(
    """
    import json, sys
    from ray.cluster_utils import Cluster

    temp = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp})
    cluster.add_node(num_cpus=1, temp_dir=temp)
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address}), flush=True)
    sys.stdin.read()  # until the test closes stdin
    cluster.shutdown()
    """
)


# ----------------------------------------------------------------------------- helpers


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
def price_table(tmp_path_factory) -> Path:
    """The sp500 prices of MANIFEST as a parquet table in a directory of its own."""
    from skfolio.datasets import load_sp500_dataset

    data_dir = Path(tempfile.mkdtemp(prefix="tvd-", dir="/tmp"))
    frame = load_sp500_dataset()
    frame.index.name = "date"
    frame.reset_index().to_parquet(data_dir / "sp500.parquet")
    yield data_dir / "sp500.parquet"
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(price_table):
    """Two Ray nodes on 127.0.0.1 with token auth that see neither the prices nor the project's code."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a mount namespace")
    temp = Path(tempfile.mkdtemp(prefix="tvm-", dir="/tmp"))  # short: Ray's unix sockets live below
    token_path = temp / "token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    hidden = [price_table.parent, PROJECT / "tradingview_scraper"]
    Path("/tmp/ray").mkdir(exist_ok=True)  # hidden too: the utility records its cluster there
    mounts = " && ".join(f"mount -t tmpfs none {d}" for d in [*hidden, Path("/tmp/ray")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHON"))}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'{mounts} && exec "$0" -c "$1" "$2"', sys.executable, TWO_NODES, str(temp / "r")],
        cwd=temp, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=30)[1][-3000:]
        yield {"address": json.loads(line)["address"], "token_path": token_path, "proc": proc, "hidden": hidden}
    finally:
        members = cluster_members(str(temp))
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pid in alive(members):  # only our own leftovers, by PID
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _run_driver(profile: str, manifest: Path, runs_root: Path, run_id: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, str(PROJECT / "scripts/run_meta_pipeline.py"), "--profile", profile,
        "--manifest", str(manifest), "--runs-root", str(runs_root), "--run-id", run_id, *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=PROJECT, env=_env_without_ray(), capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------- cheap checks


def test_private_cluster_cannot_oversubscribe_the_machine(manifest, tmp_path):
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(
        ConfigError, match=rf"num_cpus={too_many} \(config ray_num_cpus\) exceeds this machine's"
    ):
        MetaPipeline("meta_four", manifest=manifest, runs_root=tmp_path, ray_num_cpus=too_many)


def test_sigint_handler_chains_to_the_previous_one():
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ray_cluster.watch_interrupts()
        handler = signal.getsignal(signal.SIGINT)
        ray_cluster.watch_interrupts()
        assert signal.getsignal(signal.SIGINT) is handler  # idempotent: wrapped once
        assert not ray_cluster.interrupted()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        assert ray_cluster.interrupted()
        with pytest.raises(SleeveError, match=r"sleeve 'x' not started: the run was interrupted"):
            Cluster(num_cpus=1).map(np.sum, [("x", ([1],), {})])
        ray_cluster.watch_interrupts()
        assert not ray_cluster.interrupted()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job: stays ignored
        ray_cluster.watch_interrupts()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- one private cluster per run


def test_run_starts_one_private_cluster_and_stops_it(ray_run):
    result, watch = ray_run
    watch.assert_gone(clusters=1)
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
        # a new run id with nothing changed: its sleeve jobs run, each reused from the node store (issue 25)
        again = MetaPipeline(
            "meta_four", manifest=manifest, run_id="again", runs_root=result.run_dir.parent, execute_sleeves=True
        ).execute()
    # execute_sleeves is part of the resolved manifest: only that record is rewritten
    assert {job.rule for job in rerun.jobs} <= {"resolved_manifest", "all"}
    rules = [job.rule for job in pinned.jobs]
    assert rules.count("pinned_sleeve") == 4 and "sleeve" not in rules and "flatten" in rules
    assert [job.rule for job in again.jobs].count("sleeve") == 4
    entries = [json.loads(line) for line in (again.run_dir / "audit.jsonl").read_text().splitlines()]
    assert [e["params"]["reused"]["run"] for e in entries if e.get("stage") == "sleeve"] == ["cmp"] * 4
    watch.assert_gone(clusters=0)


def test_sequential_mode_produces_the_same_artifacts(ray_run, manifest, tmp_path):
    result, _ = ray_run
    with ClusterWatch(os.getpid()) as watch:
        seq = MetaPipeline(
            "meta_four", manifest=manifest, run_id="cmp", runs_root=tmp_path, ray=False
        ).execute()
    watch.assert_gone(clusters=0)
    assert {p["mode"] for p in _provenance(seq.run_dir).values()} == {"sequential"}
    assert_same_artifacts(result.run_dir, seq.run_dir)
    # Byte for byte, but for where and how long tasks ran (bench/compare_runs.py says what it leaves out).
    compared = subprocess.run(
        [sys.executable, str(PROJECT / "bench" / "compare_runs.py"), str(result.run_dir), str(seq.run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stdout
    assert compared.stdout.strip().endswith(": identical")


# ----------------------------------------------------------------------------- an external two-node cluster


def test_two_nodes_without_the_data_or_the_code_compute_every_sleeve_and_are_left_running(
    ray_run, two_nodes, manifest, price_table, tmp_path
):
    """A table-source run on nodes that see neither the table nor the project: same numbers."""
    result, _ = ray_run
    tabled = json.loads(json.dumps(MANIFEST))
    tabled["defaults"]["data"].update(source="table", path=str(price_table))
    tabled["defaults"]["data"].pop("dataset", None)
    table_manifest = tmp_path / "manifest.json"
    table_manifest.write_text(json.dumps(tabled))
    done = _run_driver(
        "meta_four", table_manifest, tmp_path, "cmp", "--cores", "4",
        "--ray-address", two_nodes["address"], "--ray-token-path", str(two_nodes["token_path"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "cmp"
    prov = _provenance(run_dir)
    assert sorted(prov) == sorted(SP500)
    assert {p["mode"] for p in prov.values()} == {"external"}
    assert {p["address"] for p in prov.values()} == {two_nodes["address"]}
    assert len({t["node_id"] for t in _tasks(prov)}) == 2, prov  # 1 CPU per node, tasks on both
    assert {t["node_ip"] for t in _tasks(prov)} == {"127.0.0.1"}
    # At most the cluster's 2 CPUs (the runner asked it) though 4 cores were given.
    assert _max_overlap(_intervals(run_dir, "sleeve")) <= 2
    assert_same_artifacts(result.run_dir, run_dir, skip=frozenset({"manifest.resolved.json"}))
    assert two_nodes["proc"].poll() is None  # left running
    members = cluster_members(str(two_nodes["token_path"].parent))
    assert len([pid for pid in members if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"]) == 2
    sockets = listening(members)
    assert sockets and {ip for _, ip, _ in sockets} <= LOOPBACK, sockets
    hidden = subprocess.run(  # what the nodes see where the driver has the table and the code
        ["nsenter", "-t", str(two_nodes["proc"].pid), "-m", "ls", "-A", *map(str, two_nodes["hidden"])],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert hidden.returncode == 0 and "sp500.parquet" not in hidden.stdout and ".py" not in hidden.stdout, hidden


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
        # As from a terminal: a suite started in the background (``make test &``) inherits an
        # ignored SIGINT, which the driver rightly keeps ignoring.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
    # Ray's fate-sharing: the raylet and GCS die with the driver, their agents within a minute;
    # the temp dir stays until the next start sweeps it.
    killed_watch.assert_gone(clusters=1, timeout_s=100, files=False)
    assert stopped.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    stopped_watch.assert_gone(clusters=1, timeout_s=10)
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
    watch.assert_gone(clusters=0)
    assert not (tmp_path / "refused").exists()


def test_failing_sleeve_stops_the_plain_command_before_meta_and_a_rerun_recomputes_only_it(
    two_nodes, tmp_path
):
    """The plain snakemake command (its hooks stop the cluster); the fixed rerun goes to RAY_ADDRESS."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    code, output, watch = _plain_command(manifest, "ff", cores=3)
    assert code != 0, output[-3000:]
    watch.assert_gone(clusters=1)
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
    rerun = _run_driver(
        "meta_pair", manifest, tmp_path, "ff", "--verbose",
        "--ray-address", two_nodes["address"], "--ray-token-path", str(two_nodes["token_path"]),
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # only 'bad' and the meta layer ran
    assert (run_dir / "report.md").exists() and (run_dir / "sleeves/bad/returns.parquet").exists()
    assert _provenance(run_dir)["bad"]["address"] == two_nodes["address"]
    assert two_nodes["proc"].poll() is None  # left running


def test_cluster_generic_jobs_with_a_bare_environment_share_the_run_id_and_cluster(manifest, tmp_path):
    """Every job under `env -i` (a scheduler exporting nothing), no run id: one run, one cluster."""
    bin_dir = Path(sys.executable).parent
    cmd = [
        str(bin_dir / "snakemake"), "-s", "workflow/Snakefile", "--executor", "cluster-generic", "--jobs", "4",
        "--seconds-between-status-checks", "1",  # the scheduler's poll, not the workflow's (default 10 s a round)
        "--cluster-generic-submit-cmd", f"env -i HOME={os.environ.get('HOME', '/root')} PATH={bin_dir}:/usr/bin:/bin",
        "--config", "profile=meta_ab", f"manifest={manifest}", f"runs_root={tmp_path}",
    ]  # fmt: skip
    driver = subprocess.Popen(cmd, cwd=PROJECT, env=_env_without_ray(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    with ClusterWatch(driver.pid) as watch:
        output, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, output[-3000:]
    watch.assert_gone(clusters=1)
    [run_dir] = [p for p in tmp_path.iterdir() if p.name != ".store"]  # the runs root's store aside
    prov = _provenance(run_dir)
    assert sorted(prov) == ["a", "b"] and {p["run_id"] for p in prov.values()} == {run_dir.name}
    assert len({p["address"] for p in prov.values()}) == 1 and {p["mode"] for p in prov.values()} == {"private"}
    assert (run_dir / "report.md").exists()
