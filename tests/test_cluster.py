"""The run's Ray cluster (tradingview_scraper.cluster) on real loopback clusters, public Ray API only."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from tradingview_scraper.cluster import Cluster, local_call
from tradingview_scraper.errors import ConfigError, MetaError, PipelineError, SleeveError

from .helpers import (
    LOOPBACK,
    TEMP_PREFIX,
    alive,
    cluster_members,
    environ,
    listening,
    processes,
    wait_gone,
)

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_KEYS = {"node_id", "node_ip", "worker_pid", "duration_s", "address", "mode", "warnings"}


# ----------------------------------------------------------------------------- task functions
# Pickled by value (see the ``cluster`` fixture): Ray workers cannot import this test module.


def _record_then_raise(marker: str) -> None:
    with open(marker, "a") as fh:
        fh.write("attempt\n")
    raise ValueError("boom")


def _record_then_die(marker: str) -> None:
    with open(marker, "a") as fh:
        fh.write("attempt\n")
    os._exit(3)


def _sleep_recorded(marker: str, seconds: float) -> None:
    with open(marker, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(marker, "a") as fh:
        fh.write("end\n")


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise RuntimeError(f"negative input {x}")
    return x * x


def _column_sum(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].sum())


def _warn_twice(x: int) -> int:
    import warnings

    for _ in range(2):
        warnings.warn(f"solution may be inaccurate for {x}", UserWarning, stacklevel=1)
    return x


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- no cluster


def test_no_private_ray_api_anywhere():
    """Ray's private modules are never imported: not by the package, the workflow, scripts, bench or tests."""
    private = re.compile(r"\bray\.(" + "|".join(["_private", "_raylet", r"core\.generated"]) + r")\b")
    files = [
        p
        for folder in ("tradingview_scraper", "workflow", "scripts", "bench", "tests")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and (p.suffix in {".py", ".smk", ".sh"} or p.name == "Snakefile")
    ]
    assert len(files) > 20
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if private.search(line)]  # fmt: skip
    assert hits == []
    package = sum(len(p.read_text().splitlines()) for p in (ROOT / "tradingview_scraper/cluster").glob("*.py"))
    assert package < 640, f"the Ray subpackage has {package} lines"
    importers = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tradingview_scraper").rglob("*.py")
        if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)
    ]
    assert all(name.startswith("tradingview_scraper/cluster/") for name in importers), importers


def test_local_call_returns_result_and_provenance():
    result, provenance = local_call(np.sum, np.arange(5), dtype=float)
    assert result == 10.0
    assert set(provenance) == PROVENANCE_KEYS
    assert provenance["mode"] == "sequential" and provenance["node_id"] is None
    assert provenance["worker_pid"] == os.getpid()
    with pytest.raises(RuntimeError, match="negative input -1"):
        local_call(_square_or_fail, -1)


@pytest.mark.parametrize("address", ["auto", "local", "", "nohost", "http//x:1"])
def test_invalid_address_is_rejected(address):
    with pytest.raises(ConfigError, match="explicit Ray address"):
        Cluster(address)


@pytest.mark.parametrize("num_cpus", [0, -1, 1.5, True])
def test_invalid_num_cpus_is_rejected(num_cpus):
    with pytest.raises(ConfigError, match="ray_num_cpus"):
        Cluster(num_cpus=num_cpus)


def test_invalid_settings_are_rejected():
    with pytest.raises(ConfigError, match="exceeds this machine's"):
        Cluster(num_cpus=(os.cpu_count() or 1) + 1)
    with pytest.raises(ConfigError, match="ray_mode"):
        Cluster("127.0.0.1:1", mode="shared")


def test_construction_starts_nothing():
    cluster = Cluster(num_cpus=1)
    assert (cluster.mode, cluster.address, cluster.is_up, cluster.cpus()) == ("private", None, False, 1)
    assert cluster.map(np.sum, []) == {}
    with pytest.raises(PipelineError, match="not started"):
        cluster.job_config()
    with pytest.raises(PipelineError, match="not started"):
        cluster.connect()  # a job cannot join a private cluster nobody started
    with pytest.raises(ConfigError, match="duplicate names"):
        cluster.map(np.sum, [("a", ([1],), {}), ("a", ([2],), {})])
    with pytest.raises(SleeveError, match=r"sleeve 'big' needs num_cpus=2 .* has 1 CPUs"):
        cluster.map(np.sum, [("big", ([1],), {})], num_cpus=2)
    assert Cluster("10.0.0.5:6379").mode == "external"
    assert cluster_members(f"{TEMP_PREFIX}{os.getpid()}-") == {}


@pytest.mark.e2e
def test_unreachable_cluster_fails_fast():
    port = _free_port()  # nothing listens there
    # The cluster's own reachability check answers (its message), not Ray's retries to connect.
    with pytest.raises(PipelineError, match=rf"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        Cluster(f"127.0.0.1:{port}").map(np.sum, [("x", ([1],), {})])


# ----------------------------------------------------------------------------- one private cluster


@pytest.mark.e2e  # before the module's cluster fixture: one process owns one cluster
def test_a_cluster_started_on_demand_starts_once_for_the_first_task_and_outlives_its_thread():
    lazy = Cluster(num_cpus=1).start_on_demand()
    assert lazy.address is None and not lazy.is_up  # nothing started yet
    assert cluster_members(f"{TEMP_PREFIX}{os.getpid()}-") == {}
    results: dict[int, float] = {}

    def job(i: int) -> None:  # a Snakemake job thread: the first task of any of them starts the head
        results[i] = lazy.map(np.sum, [(f"s{i}", (np.arange(10) * i,), {})])[f"s{i}"][0]

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {0: 0, 1: 45, 2: 90}
    assert lazy.is_up and lazy.address.startswith("127.0.0.1:") and lazy.start_s is not None
    members = cluster_members(str(lazy.token_path.parent))
    assert len({d for d in members.values()}) == 1  # one cluster for the three jobs
    # The job threads are gone; Ray ties the head to the thread that started it, which lives on.
    assert lazy.map(sum, [("after", ([2, 3],), {})])["after"][0] == 5
    lazy.shutdown()
    assert wait_gone(members, 20) == []
    assert not lazy.token_path.parent.exists()
    assert not any(t.name.startswith("tvs-ray-head") for t in threading.enumerate())
    with pytest.raises(PipelineError, match="shut down"):
        lazy.map(np.sum, [("late", ([1],), {})])


@pytest.mark.e2e  # before the module's cluster fixture: one process owns one cluster
def test_a_cluster_started_from_a_thread_that_ends_stays_up_until_shutdown():
    """start() from any thread (onstart need not run on the main thread): Ray's processes outlive that thread."""
    owned = Cluster(num_cpus=1)
    starter = threading.Thread(target=owned.start)
    starter.start()
    starter.join(timeout=120)
    assert owned.is_up and not starter.is_alive()
    members = cluster_members(str(owned.token_path.parent))
    core = [pid for pid in members if _title(pid) in {"gcs_server", "raylet"}]
    assert len(core) == 2, members
    assert owned.map(sum, [("after", ([2, 3],), {})])["after"][0] == 5
    assert alive(core) == core  # the head outlived the thread that started it
    owned.shutdown()
    assert wait_gone(members, 20) == []
    assert not any(t.name.startswith("tvs-ray-head") for t in threading.enumerate())


@pytest.fixture(scope="module")
def cluster():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    owned = Cluster(num_cpus=2).start()
    yield owned
    owned.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.e2e
def test_concurrent_jobs_share_one_private_cluster(cluster):
    results: dict[int, tuple] = {}

    def job(i: int) -> None:
        results[i] = cluster.map(np.sum, [(f"sleeve{i}", (np.arange(1000) * i,), {})])[f"sleeve{i}"]

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    for i, (value, provenance) in results.items():
        assert value == i * 499500
        assert set(provenance) == PROVENANCE_KEYS
        assert provenance["mode"] == "private" and provenance["node_ip"] == "127.0.0.1"
        assert provenance["address"] == cluster.address and provenance["worker_pid"] != os.getpid()
    assert len({p["node_id"] for _, p in results.values()}) == 1
    assert cluster.cpus() == 2 and cluster.address.startswith("127.0.0.1:")
    assert cluster.job_config() == {
        "ray_address": cluster.address, "ray_mode": "private", "ray_token_path": str(cluster.token_path),
    }  # fmt: skip
    # A job of the same run, a thread of this process, joins through the same connection.
    job = Cluster(cluster.address, token_path=cluster.token_path, mode="private").connect()
    assert job.map(_square_or_fail, [("j", (3,), {})])["j"][0] == 9
    job.shutdown()  # leaves the owner's connection alone
    assert cluster.map(_square_or_fail, [("k", (4,), {})])["k"][0] == 16


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


@pytest.mark.e2e
def test_private_cluster_listens_on_loopback_only_with_token_auth(cluster):
    import grpc

    members = cluster_members(str(cluster.token_path.parent))
    assert len(members) >= 4, members  # GCS, raylet, agents, workers
    sockets = listening(members) + listening([os.getpid()])
    assert sockets and {ip for _, ip, _ in sockets} <= LOOPBACK, sockets
    assert cluster.token_path.stat().st_mode & 0o777 == 0o600
    assert cluster.token_path.parent.stat().st_mode & 0o777 == 0o700
    token = cluster.token_path.read_text()
    assert len(token) == 64
    # The servers that enforce auth run in token mode (the call below proves they refuse
    # without it); no member runs in another mode ({}: a process that exited meanwhile).
    core = [pid for pid in members if _cmdline(pid) and any(s in _cmdline(pid) for s in ("gcs_server", "raylet"))]
    assert core and {environ(pid).get("RAY_AUTH_MODE") for pid in core} == {"token"}, core
    assert {env.get("RAY_AUTH_MODE") for env in map(environ, members) if env} <= {"token", None}
    assert {environ(pid).get("RAY_AUTH_TOKEN_PATH") for pid in members} == {str(cluster.token_path)}
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") != str(cluster.token_path)  # not leaked to later children
    # The GCS answers only with the token (a raw gRPC call: an empty request message).
    with grpc.insecure_channel(cluster.address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo")
        for metadata in ([], [("authorization", "Bearer " + "0" * 64)]):
            with pytest.raises(grpc.RpcError) as denied:
                call(b"", timeout=10, metadata=metadata)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert call(b"", timeout=10, metadata=[("authorization", f"Bearer {token}")])


@pytest.mark.e2e
def test_task_errors_become_one_line_sleeve_errors(cluster, tmp_path):
    marker = tmp_path / "raised"
    with pytest.raises(SleeveError, match=r"sleeve 'alpha' failed: ValueError: boom") as err:
        cluster.map(_record_then_raise, [("alpha", (str(marker),), {})], max_retries=2)
    assert "\n" not in str(err.value)
    assert marker.read_text().count("attempt") == 1  # an exception is never retried
    died = tmp_path / "died"
    with pytest.raises(SleeveError, match=r"sleeve 'crashy' failed: worker died"):
        cluster.map(_record_then_die, [("crashy", (str(died),), {})], max_retries=1)
    assert died.read_text().count("attempt") == 2  # a dead worker is
    parts = [(("s", "hrp"), (2,), {}), (("s", "equal_weight"), (-1,), {})]  # one sleeve's parts
    with pytest.raises(SleeveError, match=r"sleeve 's' \(equal_weight\) failed: RuntimeError: negative input -1"):
        cluster.map(_square_or_fail, parts)


@pytest.mark.e2e
def test_task_warnings_come_back_with_the_result_once_per_place(cluster):
    """Not through the worker's stderr, which Ray forwards to the driver's console."""
    (value, provenance), = cluster.map(_warn_twice, [("w", (7,), {})], timeout_s=60).values()
    assert value == 7
    assert provenance["warnings"] == ["UserWarning: solution may be inaccurate for 7"]
    (_, quiet), = cluster.map(_square_or_fail, [("q", (3,), {})], timeout_s=60).values()
    assert quiet["warnings"] == []


@pytest.mark.e2e  # starts a Ray cluster: the full tier
def test_a_meta_node_failing_on_the_cluster_is_a_meta_error_naming_it(cluster, tmp_path):
    """A meta node's optimization that fails on a worker is worded for that node, not for a sleeve."""
    from tradingview_scraper import audit, stages, steps
    from tradingview_scraper.layout import write_parquet
    from tradingview_scraper.run import RunContext

    from .conftest import SMALL_MANIFEST

    ctx = RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "m",
                                  "runs_root": str(tmp_path), "ray": False})  # fmt: skip
    ctx.cluster = cluster  # the meta stages use the run's cluster once the sleeves started it
    returns = ctx.root.file("meta_returns", profile="hrp")
    rng = np.random.default_rng(3)
    idx = pd.bdate_range("2020-01-01", periods=50, name="date")  # fewer rows than one train window
    write_parquet(returns, pd.DataFrame(rng.normal(0, 0.01, (50, 3)), index=idx, columns=["tech", "staples", "factors"]))
    output = {"weights": ctx.root.file("meta_weights", profile="hrp"), "stream": ctx.root.file("meta_stream", profile="hrp"),
              "tree": ctx.root.file("cluster_tree", profile="hrp")}
    message = r"^meta profile 'meta_small' \(hrp\) failed: DataError: 50 observations are too few for train_window=126"
    with pytest.raises(MetaError, match=message):
        stages.run_step(steps.step("meta_optimize"), ctx, ".", "hrp", input={"returns": returns}, output=output)
    failure = audit.first_failure(ctx.run_dir)  # what the runner prints, rebuilt from the ledger
    assert type(failure) is MetaError and re.match(message, str(failure))
    assert not any(f.exists() for f in output.values())
    with pytest.raises(ConfigError, match=r"map kind='stage' is invalid: give one of sleeve, meta"):
        cluster.map(np.sum, [("x", ([1],), {})], kind="stage")


@pytest.mark.e2e  # starts a Ray cluster: the full tier
def test_timeout_cancels_the_task(cluster, tmp_path):
    marker = tmp_path / "slow"
    assert cluster.map(np.sum, [("warm", ([1],), {})])["warm"][0] == 1  # a worker is up: the task starts at once
    with pytest.raises(SleeveError, match=r"sleeve 'slow' timed out after 1 s"):
        cluster.map(_sleep_recorded, [("slow", (str(marker), 60), {})], timeout_s=1)
    # The map did not wait for the task: its worker (if it had started) is killed, the task never ends.
    started = marker.read_text().split() if marker.exists() else []
    if started:
        assert wait_gone([int(started[1])], 30) == [], "the timed-out task's worker still runs"
    assert marker.read_text().split() == started if started else not marker.exists()
    assert cluster.map(np.sum, [("after", ([2, 3],), {})])["after"][0] == 5


@pytest.mark.e2e
def test_map_keeps_input_order_and_puts_a_shared_frame_once(cluster, monkeypatch):
    import ray

    items = [(f"s{i}", (i,), {}) for i in (3, 1, 2, 0)]
    results = cluster.map(_square_or_fail, items)
    assert {name: value for name, (value, _) in results.items()} == {"s3": 9, "s1": 1, "s2": 4, "s0": 0}
    assert list(results) == ["s3", "s1", "s2", "s0"]
    frame = pd.DataFrame(np.ones((50_000, 4)), columns=list("abcd"))
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(1) or real_put(value, **kw))
    results = cluster.map(_column_sum, [(c, (frame,), {"column": c}) for c in "abcd"], timeout_s=60)
    assert {c: value for c, (value, _) in results.items()} == dict.fromkeys("abcd", 50_000.0)
    assert len(puts) == 1


@pytest.mark.e2e
def test_sleeve_results_come_back_from_workers_as_the_frames_computed_in_process(cluster):
    """A sleeve's parts cross from Ray workers as data (its returns an Arrow table) and merge to the in-process result."""
    from tradingview_scraper.sleeve import SleeveResult, compute_sleeve

    config = {
        "data": {"source": "skfolio", "start": "2020-01-01", "end": "2021-12-31"},
        "universe": {"symbols": ["KO", "PEP", "PG"]},
        "selection": {"method": "all"},
        "backtest": {"train_window": 126, "test_window": 21},
    }
    rps = ["equal_weight", "min_variance"]
    kwargs = {"sleeve_id": "x", "profile": "p"}
    results = cluster.map(compute_sleeve, [(("x", rp), (config, [rp]), kwargs) for rp in rps], timeout_s=300)
    merged = SleeveResult.merge([part for part, _ in results.values()])
    whole = compute_sleeve(config, rps, **kwargs)
    assert str(merged.returns.index.dtype) == "datetime64[us]"  # the resolution returns.parquet stores
    pd.testing.assert_frame_equal(merged.returns, whole.returns, check_exact=True)
    assert (merged.weights, merged.health, merged.sign_test) == (whole.weights, whole.health, whole.sign_test)


@pytest.mark.e2e
def test_one_process_owns_one_cluster(cluster):
    with pytest.raises(PipelineError, match="already connected"):
        Cluster(num_cpus=1).start()
    with pytest.raises(PipelineError, match=r"connected to the Ray cluster at 127\.0\.0\.1:\d+, not 127\.0\.0\.1:1\b"):
        Cluster("127.0.0.1:1").connect()


@pytest.mark.e2e
def test_shutdown_stops_every_process_and_removes_the_token(cluster):
    cluster.map(np.sum, [("before", ([1],), {})])
    temp = cluster.token_path.parent
    members = cluster_members(str(temp))
    cluster.shutdown()
    assert wait_gone(members, 20) == []
    assert not temp.exists()
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") != str(cluster.token_path)
    cluster.shutdown()  # idempotent
    with pytest.raises(PipelineError, match="shut down"):
        cluster.map(np.sum, [("after", ([1],), {})])


# ----------------------------------------------------------------------------- fate-sharing

DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    from tradingview_scraper.cluster import Cluster

    cluster = Cluster(num_cpus=1).start()
    value = cluster.map(sum, [("x", ([1, 2, 3],), {})])["x"][0]
    print(json.dumps({"value": value, "token": str(cluster.token_path), "start_s": cluster.start_s}), flush=True)
    time.sleep(600)
    """
)


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"driver printed nothing; stderr: {proc.stderr.read()[-3000:]}")


@pytest.mark.e2e
def test_a_killed_or_terminated_driver_leaves_no_cluster():
    """Ray's own fate-sharing: SIGKILL or SIGTERM of the driver takes its whole cluster down."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    drivers = {
        sig: subprocess.Popen([sys.executable, "-c", DRIVER], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for sig in (signal.SIGKILL, signal.SIGTERM)
    }  # fmt: skip
    members: dict[signal.Signals, dict] = {}
    handles: dict[signal.Signals, list[psutil.Process]] = {}  # not PIDs: the sweep's start below may reuse one
    try:
        for sig, driver in drivers.items():
            info = json.loads(_read_line(driver, 120))
            assert info["value"] == 6
            members[sig] = cluster_members(str(Path(info["token"]).parent))
            handles[sig] = processes(members[sig])
            core = [pid for pid in members[sig] if environ(pid) and _title(pid) in {"gcs_server", "raylet"}]
            assert len(core) == 2, members[sig]
            print(f"private cluster start-up {info['start_s']:.2f} s")
        for sig, driver in drivers.items():
            driver.send_signal(sig)
            driver.wait(10)
        for sig in drivers:
            core = [pid for pid in members[sig] if _title(pid) in {"gcs_server", "raylet"}]
            assert wait_gone(core, 15) == [], f"GCS or raylet outlived the driver ({sig.name})"
        # A killed driver cannot delete its temp dir (logs, token): the next start sweeps it
        # (any private start by this user: another one may have swept it already). The next
        # start needs only the driver gone, so it runs while the agents below still exit.
        left = {d for m in members.values() for d in m.values()}
        assert len(left) == 2
        Cluster(num_cpus=1).start().shutdown()
        assert [d for d in left if d.exists()] == []
        for sig in drivers:  # Ray's agents notice their raylet is gone and exit (within a minute)
            assert wait_gone(handles[sig], 100) == [], f"a process of the cluster outlived the driver ({sig.name})"
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                driver.kill()
            driver.communicate()
        for pid in alive(p for h in handles.values() for p in h):  # only our own leftovers, by PID
            os.kill(pid, signal.SIGKILL)


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
