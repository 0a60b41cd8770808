"""Tests of the Ray compute backend on real loopback clusters."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from tradingview_scraper.errors import ConfigError, PipelineError, SleeveError
from tradingview_scraper.orchestration import compute
from tradingview_scraper.orchestration.compute import (
    RayBackend,
    backend_from_config,
    local_call,
    shutdown_all,
)

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_KEYS = {"node_id", "node_ip", "worker_pid", "duration_s", "address", "mode"}
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


# ----------------------------------------------------------------------------- task functions
# Pickled by value (see the ``shared`` fixture): Ray workers cannot import this test module.


def _record_then_raise(marker: str) -> None:
    with open(marker, "a") as fh:
        fh.write("attempt\n")
    raise ValueError("boom")


def _record_then_die(marker: str) -> None:
    with open(marker, "a") as fh:
        fh.write("attempt\n")
    os._exit(3)


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise RuntimeError(f"negative input {x}")
    return x * x


def _column_sum(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].sum())


# ----------------------------------------------------------------------------- helpers


def _alive(pids) -> list[int]:
    """Return the PIDs still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            continue
    return alive


def _wait_gone(pids, timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` runs; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (left := _alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants."""
    proc = psutil.Process(pid)
    return [pid] + [child.pid for child in proc.children(recursive=True)]


def _listening(pids) -> list[tuple[int, str, int]]:
    """Return (pid, ip, port) of every listening TCP socket of ``pids``."""
    sockets = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        sockets += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]
    return sockets


def _environ(pid: int) -> dict[str, str]:
    """Return the environment of a process as read from /proc."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


class _Shared:
    """Hands out one private backend for many tests; makes a new one after a shutdown."""

    def __init__(self) -> None:
        self.backend: RayBackend | None = None

    def get(self) -> RayBackend:
        if self.backend is None or self.backend._closing.is_set():
            self.backend = RayBackend(num_cpus=2)
        return self.backend

    def release(self) -> None:
        if self.backend is not None:
            self.backend.shutdown()
            self.backend = None


@pytest.fixture(scope="module")
def shared():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    holder = _Shared()
    yield holder
    holder.release()
    shutdown_all()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def backend(shared) -> RayBackend:
    return shared.get()


# ----------------------------------------------------------------------------- no cluster


def test_local_call_returns_result_and_provenance():
    result, provenance = local_call(np.sum, np.arange(5), dtype=float)
    assert result == 10.0
    assert set(provenance) == PROVENANCE_KEYS
    assert provenance["mode"] == "sequential"
    assert provenance["node_id"] is None
    assert provenance["worker_pid"] == os.getpid()


def test_local_call_propagates_exceptions():
    with pytest.raises(RuntimeError, match="negative input -1"):
        local_call(_square_or_fail, -1)


@pytest.mark.parametrize("address", ["auto", "local", "", "nohost", "http//x:1"])
def test_invalid_address_is_rejected(address):
    with pytest.raises(ConfigError, match="explicit Ray address"):
        RayBackend(address=address)


@pytest.mark.parametrize("num_cpus", [0, -1, 1.5, True])
def test_invalid_num_cpus_is_rejected(num_cpus):
    with pytest.raises(ConfigError, match="num_cpus"):
        RayBackend(num_cpus=num_cpus)


def test_long_session_dir_is_rejected():
    with pytest.raises(ConfigError, match="session_dir"):
        RayBackend(session_dir="/tmp/" + "x" * 60)


def test_ray_address_auto_in_environment_is_rejected_at_first_use(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    backend = RayBackend()
    with pytest.raises(ConfigError, match="RAY_ADDRESS='auto'"):
        backend.run(np.sum, [1], name="never")
    assert backend.info()["head_pid"] is None


def test_construction_starts_nothing_and_info_reads_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = RayBackend(num_cpus=1)
    assert backend.info() | {"address": None} == {
        "mode": "private",
        "address": None,
        "head_pid": None,
        "num_cpus": 1,
        "token_path": None,
        "started": False,
        "reaper_pid": None,
    }
    assert backend.map(np.sum, []) == {}
    backend.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    assert RayBackend().info()["mode"] == "external"


def test_map_rejects_duplicate_names():
    with pytest.raises(ConfigError, match="duplicate names"):
        RayBackend().map(np.sum, [("a", ([1],), {}), ("a", ([2],), {})])


def test_backend_from_config_returns_one_backend_per_settings():
    assert backend_from_config(False, None, None) is None
    first = backend_from_config(True, None, 2)
    assert backend_from_config(True, None, 2) is first
    assert backend_from_config(True, None, 1) is not first
    shutdown_all()
    assert first.info()["started"] is False
    assert backend_from_config(True, None, 2) is not first
    shutdown_all()


# ----------------------------------------------------------------------------- private cluster


def test_concurrent_runs_share_one_private_head(backend):
    results: dict[int, tuple] = {}

    def job(i: int) -> None:
        results[i] = backend.run(np.sum, np.arange(1000) * i, name=f"sleeve{i}")

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    for i, (value, provenance) in results.items():
        assert value == i * 499500
        assert set(provenance) == PROVENANCE_KEYS
        assert provenance["mode"] == "private"
        assert provenance["node_ip"] == "127.0.0.1"
        assert provenance["worker_pid"] != os.getpid()
    assert len({p["node_id"] for _, p in results.values()}) == 1
    info = backend.info()
    assert info["mode"] == "private"
    assert info["num_cpus"] == 2
    assert info["address"].startswith("127.0.0.1:")
    run_dir = str(Path(info["token_path"]).parent)
    heads = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "start" in (p.info["cmdline"] or [])
        and any(arg.startswith(f"--temp-dir={run_dir}/") for arg in p.info["cmdline"])
    ]
    assert [p.pid for p in heads] == [info["head_pid"]]


def test_private_head_listens_on_loopback_only_with_token_auth(backend):
    backend.run(np.sum, [1, 2], name="warmup")
    info = backend.info()
    head = info["head_pid"]
    sockets = _listening(_tree(head)) + _listening([os.getpid()])
    assert sockets, "the head should listen somewhere"
    assert {ip for _, ip, _ in sockets} <= LOOPBACK, sockets

    token_path = Path(info["token_path"])
    assert token_path.stat().st_mode & 0o777 == 0o600
    assert token_path.parent.stat().st_mode & 0o777 == 0o700
    token = token_path.read_text()
    assert len(token) == 64
    for pid in _tree(head)[:2]:  # ray start and the GCS server
        env = _environ(pid)
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == str(token_path)
        assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)

    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(info["address"]) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetAllNodeInfoRequest()
        for metadata in ([], [("authorization", "Bearer " + "0" * 64)]):
            with pytest.raises(grpc.RpcError) as denied:
                stub.GetAllNodeInfo(request, timeout=10, metadata=metadata)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetAllNodeInfo(
            request, timeout=10, metadata=[("authorization", f"Bearer {token}")]
        )
        assert len(reply.node_info_list) == 1


def test_task_exception_becomes_sleeve_error_without_retry(backend, tmp_path):
    marker = tmp_path / "attempts"
    with pytest.raises(SleeveError, match=r"sleeve 'alpha' failed: ValueError: boom") as err:
        backend.run(_record_then_raise, str(marker), name="alpha", max_retries=2)
    assert "\n" not in str(err.value)
    assert type(err.value.__cause__).__name__.startswith("RayTaskError")
    assert marker.read_text().count("attempt") == 1


def test_worker_crash_is_retried_then_reported(backend, tmp_path):
    marker = tmp_path / "attempts"
    with pytest.raises(SleeveError, match=r"sleeve 'crashy' failed: worker died"):
        backend.run(_record_then_die, str(marker), name="crashy", max_retries=1)
    assert marker.read_text().count("attempt") == 2


def test_timeout_cancels_the_task(backend):
    started = time.monotonic()
    with pytest.raises(SleeveError, match=r"sleeve 'slow' timed out after 1 s"):
        backend.run(time.sleep, 60, name="slow", timeout_s=1)
    assert time.monotonic() - started < 10
    value, _ = backend.run(np.sum, [2, 3], name="after-timeout")
    assert value == 5


def test_map_collects_every_item_in_input_order(backend):
    items = [(f"s{i}", (i,), {}) for i in (3, 1, 2, 0)]
    results = backend.map(_square_or_fail, items)
    assert list(results) == ["s3", "s1", "s2", "s0"]
    assert {name: value for name, (value, _) in results.items()} == {
        "s3": 9,
        "s1": 1,
        "s2": 4,
        "s0": 0,
    }
    assert all(set(p) == PROVENANCE_KEYS for _, p in results.values())


def test_map_failure_names_the_item(backend):
    items = [("good", (2,), {}), ("bad", (-1,), {}), ("fine", (3,), {})]
    with pytest.raises(SleeveError, match=r"sleeve 'bad' failed: RuntimeError: negative input -1"):
        backend.map(_square_or_fail, items)
    parts = [(("s", "hrp"), (2,), {}), (("s", "equal_weight"), (-1,), {})]  # one sleeve's parts
    with pytest.raises(SleeveError, match=r"sleeve 's' \(equal_weight\) failed: RuntimeError: negative input -1"):
        backend.map(_square_or_fail, parts)


def test_map_puts_a_large_shared_frame_once(backend, monkeypatch):
    import ray

    frame = pd.DataFrame(np.ones((50_000, 4)), columns=list("abcd"))  # 1.6 MB
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(1) or real_put(value, **kw))
    items = [(c, (frame,), {"column": c}) for c in "abcd"]
    results = backend.map(_column_sum, items, timeout_s=60)
    assert {c: value for c, (value, _) in results.items()} == dict.fromkeys("abcd", 50_000.0)
    assert len(puts) == 1


def test_second_backend_in_process_is_refused_while_one_is_connected(backend):
    backend.run(np.sum, [1], name="connected")
    with pytest.raises(PipelineError, match="another RayBackend is connected"):
        RayBackend(num_cpus=1).run(np.sum, [1], name="second")


def test_shutdown_stops_head_session_and_reaper(shared):
    backend = shared.get()
    backend.run(np.sum, [1], name="before-shutdown")
    info = backend.info()
    head, reaper = info["head_pid"], info["reaper_pid"]
    token_path = Path(info["token_path"])
    tracked = set(_tree(head)) | {reaper}
    session = {p.pid for p in psutil.process_iter() if _sid(p.pid) == head}
    tracked |= session
    assert len(tracked) > 3
    previous_token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    assert previous_token_path == str(token_path)

    backend.shutdown()
    assert _wait_gone(tracked, 15) == []
    assert not token_path.parent.exists()
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") != str(token_path)
    backend.shutdown()  # idempotent
    with pytest.raises(PipelineError, match="shut down"):
        backend.run(np.sum, [1], name="after-shutdown")


def test_head_that_does_not_come_up_is_cleaned_up(shared, monkeypatch):
    shared.release()  # Ray allows one connection per process
    monkeypatch.setattr(compute, "_HEAD_START_TIMEOUT_S", 0.0)
    backend = RayBackend(num_cpus=1)
    with pytest.raises(PipelineError, match=r"did not come up on 127\.0\.0\.1:\d+ within 0 s"):
        backend.run(np.sum, [1], name="x")
    temp_dir = str(Path(backend.info()["token_path"]).parent)
    ours = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in arg for arg in p.info["cmdline"] or [])
    ]
    assert _wait_gone(ours, 15) == []
    assert not Path(temp_dir).exists()
    assert compute._connected is None
    assert (
        "RAY_AUTH_TOKEN_PATH" not in os.environ or temp_dir not in os.environ["RAY_AUTH_TOKEN_PATH"]
    )
    with pytest.raises(PipelineError, match="failed to start earlier"):
        backend.run(np.sum, [1], name="x")


def test_start_in_background_boots_the_head_before_the_first_task(shared, monkeypatch):
    shared.release()  # Ray allows one connection per process
    backend = RayBackend(num_cpus=1)
    try:
        backend.start_in_background()
        deadline = time.monotonic() + 90
        while not backend.info()["started"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backend.info()["started"], "the cluster did not come up in the background"
        head = backend.info()["head_pid"]
        backend.start_in_background()  # once: a second call starts nothing
        assert backend.run(np.sum, [1, 2], name="x")[0] == 3
        assert backend.info()["head_pid"] == head
    finally:
        backend.shutdown()
    # A start that fails in the background is reported by the first task.
    monkeypatch.setattr(compute, "_HEAD_START_TIMEOUT_S", 0.0)
    failing = RayBackend(num_cpus=1)
    failing.start_in_background()
    with pytest.raises(PipelineError, match=r"did not come up on 127\.0\.0\.1:\d+ within 0 s"):
        failing.run(np.sum, [1], name="x")  # waits for the background start, then reports it
    failing.shutdown()


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


# ----------------------------------------------------------------------------- reaper


DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import ray  # before the backend sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the hard case
    import numpy as np
    import psutil
    from tradingview_scraper.orchestration.compute import RayBackend

    backend = RayBackend(num_cpus=1)
    value, provenance = backend.run(np.sum, np.arange(4), name="x")
    info = backend.info()
    tree = [info["head_pid"]] + [c.pid for c in psutil.Process(info["head_pid"]).children(recursive=True)]
    listen = [c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"]
    print(json.dumps(dict(info, value=int(value), tree=tree, listen=listen,
                          head_start_s=backend.head_start_s, connect_s=backend.connect_s)), flush=True)
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


def test_reaper_stops_head_when_driver_is_sigkilled():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in (
        "RAY_ADDRESS",
        "RAY_AUTH_TOKEN_PATH",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    ):
        env.pop(key, None)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    info = None
    try:
        info = json.loads(_read_line(driver, 90))
        assert info["value"] == 6
        assert set(info["listen"]) <= LOOPBACK, info["listen"]
        tracked = set(info["tree"]) | {info["reaper_pid"]}
        tracked |= {p.pid for p in psutil.process_iter() if _sid(p.pid) == info["head_pid"]}
        driver.kill()
        driver.wait(5)
        assert _wait_gone(tracked, 20) == []
        assert not Path(info["token_path"]).parent.exists()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(5)
        if info is not None:  # never leave a head behind, even when the reaper failed
            compute._kill_session(info["head_pid"], 1.0)
            for pid in _alive([info["reaper_pid"]]):
                os.kill(pid, 9)
            shutil.rmtree(Path(info["token_path"]).parent, ignore_errors=True)
        driver.stdout.close()
        driver.stderr.close()
    print(f"head start {info['head_start_s']:.2f} s, connect {info['connect_s']:.2f} s")


# ----------------------------------------------------------------------------- external cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_external_cluster_is_used_and_never_stopped(shared, monkeypatch):
    shared.release()  # Ray allows one connection per process
    temp_dir = Path(tempfile.mkdtemp(prefix="tvx", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    port = _free_port()
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        PYTHONPATH=str(ROOT),
    )
    env.pop("RAY_ADDRESS", None)
    ray_cli = Path(sys.executable).with_name("ray")
    command = [
        str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={port}", f"--ray-client-server-port={_free_port()}", "--num-cpus=1",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    with open(temp_dir / "head.log", "wb") as log:
        head = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
            monkeypatch.setenv(key, env[key])
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        deadline = time.monotonic() + 60
        while True:
            assert head.poll() is None, (temp_dir / "head.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "external head did not start"
                time.sleep(0.1)

        backend = RayBackend(address=f"127.0.0.1:{port}")
        value, provenance = backend.run(np.sum, [4, 5], name="ext")
        assert value == 9
        assert provenance["mode"] == "external"
        assert provenance["address"] == f"127.0.0.1:{port}"
        info = backend.info()
        assert info["mode"] == "external" and info["head_pid"] is None
        assert info["num_cpus"] == 1
        tree = _tree(head.pid)
        backend.shutdown()
        time.sleep(1)
        assert head.poll() is None
        assert set(_alive(tree[:3])) == set(tree[:3])  # ray start, GCS and more still run
    finally:
        compute._kill_session(head.pid, 10.0, leader=head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert _alive([head.pid]) == []


def test_unreachable_external_cluster_fails_fast(shared, monkeypatch):
    shared.release()  # Ray allows one connection per process
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = _free_port()  # nothing listens there
    backend = RayBackend(address=f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(PipelineError, match=rf"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        backend.run(np.sum, [1], name="x")
    assert time.monotonic() - started < 15
    assert compute._connected is None
    backend.shutdown()
