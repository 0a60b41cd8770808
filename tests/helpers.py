"""Helpers shared by tests: processes of a run's Ray cluster (found by PID and temp dir, never by name);
synthetic TradingView chart exports; small price tables, a copy of the project to run from, the ledger's stages."""

from __future__ import annotations

import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from .conftest import PROJECT, SMALL_MANIFEST

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
#: Prefix of the temp dirs of the private clusters a driver starts (see tradingview_scraper.cluster).
TEMP_PREFIX = "/tmp/tvr-"


def processes(pids) -> list[psutil.Process]:
    """Handles on the running ``pids``: unlike a bare PID, a handle never names a later process reusing it."""
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


def alive(pids) -> list[int]:
    """The PIDs still running (zombies count as gone); a :class:`psutil.Process` only while its PID is its own."""
    out = []
    for item in pids:
        try:
            proc = item if isinstance(item, psutil.Process) else psutil.Process(item)
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


def wait_gone(pids, timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` (PIDs or :func:`processes` handles) runs; return those alive at the deadline.

    Waits on the processes' exits (a pidfd per process turns readable when it exits), not on
    a clock: the wait ends the moment the last one is gone.
    """
    fds = {}
    for item in pids:
        try:
            fd = os.pidfd_open(item.pid if isinstance(item, psutil.Process) else item)
        except ProcessLookupError:
            continue
        if alive([item]):  # checked once the pidfd is open: it names this process, not a later one
            fds[fd] = item
        else:
            os.close(fd)
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout_s
    try:
        while fds and (left_s := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left_s * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)
    return alive(fds.values())


def listening(pids) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket of ``pids``."""
    sockets = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        sockets += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]
    return sockets


def environ(pid: int) -> dict[str, str]:
    """The environment a process was started with, read from /proc ({} if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def cluster_members(token_dir_prefix: str) -> dict[int, Path]:
    """Every process whose Ray token file lies below ``token_dir_prefix``: PID -> its temp dir.

    Every process of a private cluster (GCS, raylet, agents, workers) inherits the
    ``RAY_AUTH_TOKEN_PATH`` of the driver that started it, which names that run's temp dir.
    """
    members = {}
    for pid in psutil.pids():
        token = environ(pid).get("RAY_AUTH_TOKEN_PATH", "")
        if token.startswith(token_dir_prefix):
            members[pid] = Path(token).parent
    return members


class ClusterWatch:
    """Records every private Ray cluster a driver process starts, with all its processes.

    A cluster of driver ``pid`` is a temp dir ``/tmp/tvr-<pid>-*``; its members are the
    processes started with a token file there.
    """

    def __init__(self, driver_pid: int) -> None:
        self.prefix = f"{TEMP_PREFIX}{driver_pid}-"
        self.clusters: set[Path] = set()
        self.members: set[int] = set()
        self.tasks: set[str] = set()  # titles of workers seen executing a sleeve task
        self.running: set[str] = set()  # the same, at the last look
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
        running = set()
        for pid, temp in cluster_members(self.prefix).items():
            self.clusters.add(temp)
            self.members.add(pid)
            try:
                title = (psutil.Process(pid).cmdline() or [""])[0]
            except psutil.Error:
                continue
            if title.startswith("ray::sleeve:"):
                running.add(title)
        self.tasks |= running
        self.running = running

    def wait_for_task(self, proc, timeout_s: float = 120) -> None:
        """Wait until a worker of the driver's cluster executes a sleeve task (now, not only once)."""
        deadline = time.monotonic() + timeout_s
        while not self.running:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no sleeve task ever ran on the driver's cluster"
            time.sleep(0.1)

    def assert_gone(self, clusters: int = 1, timeout_s: float = 20, files: bool = True) -> None:
        """Exactly ``clusters`` were started; all their processes (and, with ``files``, temp dirs) are gone."""
        assert len(self.clusters) == clusters, self.clusters
        assert wait_gone(self.members, timeout_s) == []
        if files:
            assert [d for d in self.clusters if d.exists()] == []


def write_tradingview_export(directory: Path, symbol: str, dates: pd.DatetimeIndex, closes: np.ndarray) -> Path:
    """Write one TradingView-format daily chart export (``time,open,high,low,close,Volume``).

    ``time`` is in unix seconds, as TradingView exports it; the file is named like a real
    export (``BINANCE_<symbol>, 1D.csv``), so the symbol comes from the file name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["time,open,high,low,close,Volume"]
    for day, close in zip(dates, closes, strict=True):
        t = int(pd.Timestamp(day).timestamp())
        c = repr(float(close))
        lines.append(f"{t},{c},{c},{c},{c},100")
    path = directory / f"BINANCE_{symbol}, 1D.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def synthetic_crypto(directory: Path, symbols: list[str], start: str, end: str, *, vol: float, seed: int) -> Path:
    """Random-walk 24x7 daily prices (weekends included) for ``symbols``, as TradingView exports."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, end, freq="D")
    for sym in symbols:
        closes = 100.0 * np.cumprod(1.0 + rng.normal(0.0005, vol, len(days)))
        write_tradingview_export(directory, sym, days, closes)
    return directory


# ----------------------------------------------------------------------------- user data, project copies, ledgers

WINDOWS = {"train_window": 40, "test_window": 10}


def prices(symbols, start="2020-01-01", n=120, seed=0) -> pd.DataFrame:
    """A wide table of positive random-walk prices, one column per symbol."""
    rng = np.random.default_rng(seed)
    values = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, len(symbols))), axis=0))
    frame = pd.DataFrame(values, index=pd.bdate_range(start, periods=n, name="date"), columns=list(symbols))
    return frame.round(6)


def tradingview_export(path: Path, seed: int, n: int = 120) -> None:
    """A TradingView chart export (time in unix seconds, OHLC, Volume) of one random-walk symbol."""
    close = prices(["X"], n=n, seed=seed)["X"]
    frame = pd.DataFrame(
        {"time": [int(t.timestamp()) for t in close.index], "open": close, "high": close, "low": close, "close": close, "Volume": 1}
    )
    frame.to_csv(path, index=False)


def table_manifest(data_dir: Path, *, nested: bool = False, tradingview: bool = True) -> dict:
    """The small test manifest plus sleeves on user data and meta profiles of them.

    ``ta`` reads ``a.csv``, ``tb`` reads ``b.csv`` (tables), ``tv`` reads the TradingView
    exports ``tv/X_ONE, 1D.csv`` and ``tv/X_TWO, 1D.csv``. ``meta_tables`` holds all three
    (without ``tradingview``: only the two tables, and no ``tv``); with ``nested``,
    ``meta_outer`` holds ``meta_tables`` as a sleeve next to ``tb`` again.
    """
    m = json.loads(SMALL_MANIFEST.read_text())
    for name, symbols in (("ta", ["AAA", "BBB"]), ("tb", ["CCC", "DDD"])):
        m["profiles"][name] = {
            "data": {"source": "table", "path": str(data_dir / f"{name[1]}.csv")},
            "universe": {"symbols": symbols},
            "backtest": dict(WINDOWS),
        }
    sleeves = [{"id": "a", "profile": "ta"}, {"id": "b", "profile": "tb"}]
    if tradingview:
        m["profiles"]["tv"] = {
            "data": {"source": "tradingview", "path": str(data_dir / "tv")},
            "universe": {"symbols": ["ONE", "TWO"]},
            "backtest": dict(WINDOWS),
        }
        sleeves.append({"id": "c", "profile": "tv"})
    m["profiles"]["meta_tables"] = {
        "sleeves": sleeves,
        "backtest": dict(WINDOWS),
        "profiles": ["equal_weight", "min_variance"],
    }
    if nested:
        m["profiles"]["meta_outer"] = {
            "sleeves": [{"id": "inner", "meta_profile": "meta_tables"}, {"id": "b2", "profile": "tb"}],
            "backtest": dict(WINDOWS),
            "profiles": ["equal_weight", "min_variance"],
        }
    return m


def write_table_data(data_dir: Path, n: int = 200) -> None:
    """The price files of :func:`table_manifest`, ``n`` weekdays each (enough for two nested levels)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    prices(["AAA", "BBB"], n=n).to_csv(data_dir / "a.csv")
    prices(["CCC", "DDD"], n=n, seed=1).to_csv(data_dir / "b.csv")
    (data_dir / "tv").mkdir(exist_ok=True)
    tradingview_export(data_dir / "tv" / "X_ONE, 1D.csv", seed=2, n=n)
    tradingview_export(data_dir / "tv" / "X_TWO, 1D.csv", seed=3, n=n)


def copy_project(dest: Path) -> Path:
    """A copy of the package, the workflow and the scripts, to run (and edit) without touching the checkout."""
    for name in ("tradingview_scraper", "workflow", "scripts", "config"):
        shutil.copytree(PROJECT / name, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def run_script(cwd: Path, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """``scripts/run_meta_pipeline.py`` as a subprocess from ``cwd``, importing the package found there.

    The timeout only guards against a hang: on a loaded machine a run with a Ray cluster takes minutes.
    """
    full_env = {**os.environ, "PYTHONPATH": str(cwd), **(env or {})}
    return subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )  # fmt: skip


def ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]


def stages_since(run_dir: Path, seq: int) -> list[tuple[str, str]]:
    """(stage, node) of every successful stage the ledger recorded after entry ``seq``, sorted."""
    return sorted(
        (e["stage"], e["node"])
        for e in ledger(run_dir)
        if e["seq"] > seq and e["kind"] == "stage" and e["outcome"] == "success"
    )


def last_seq(run_dir: Path) -> int:
    return ledger(run_dir)[-1]["seq"]


def file_bytes(root: Path, skip: tuple[str, ...] = ("logs/", "audit.jsonl", ".run.lock")) -> dict[str, bytes]:
    """Every file below ``root`` (relative posix path -> bytes), logs, the ledger and locks aside."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(s in rel for s in skip):
            out[rel] = path.read_bytes()
    return out


# --------------------------------------------------------------------------- artifact equality

#: Where and how a sleeve ran: differs between runs by design (provenance.json).
PLACEMENT = frozenset({"address", "mode", "tasks"})
#: Not artifacts: logs, the ledger (timestamps) and the lock files.
NOT_ARTIFACTS = re.compile(r"(^|/)(logs/|audit\.jsonl|\.run\.lock)")
#: The one tolerance of "the same numbers" between two runs of the same inputs.
RTOL, ATOL = 1e-12, 1e-14


def load_artifacts(run_dir: Path, skip: frozenset[str] = frozenset()) -> dict[str, object]:
    """Every artifact of a run, loaded, with its run id and run directory masked.

    Parquet files become frames, JSON files records (placement fields of provenance
    dropped), reports masked text, anything else bytes. ``skip``: file names left out.
    """
    out: dict[str, object] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if not path.is_file() or NOT_ARTIFACTS.search(rel) or path.name in skip:
            continue
        if path.suffix == ".parquet":
            out[rel] = pd.read_parquet(path)
        elif path.suffix == ".json":
            record = json.loads(path.read_text().replace(str(run_dir), "<run_dir>"))
            if path.name == "provenance.json":
                record = {k: v for k, v in record.items() if k not in PLACEMENT | {"run_id"}}
            elif isinstance(record, dict) and "run_id" in record:
                record["run_id"] = "<run>"
            out[rel] = record
        elif path.suffix in {".md", ".html"}:
            text = path.read_text().replace(str(run_dir), "<run_dir>")
            out[rel] = re.sub(rf"\b{re.escape(run_dir.name)}\b", "<run>", text)
        else:
            out[rel] = path.read_bytes()
    return out


def assert_close(a, b, where: str) -> None:
    """``a`` equals ``b`` (frames, records, text), floats to :data:`RTOL` / :data:`ATOL`."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=RTOL, atol=ATOL, obj=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_artifacts(left: Path, right: Path, skip: frozenset[str] = frozenset()) -> None:
    """Two runs hold the same artifacts with the same contents (but for ``skip``, file names)."""
    a, b = load_artifacts(left, skip), load_artifacts(right, skip)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    assert any(k.startswith("meta/") for k in a) and any(k.startswith("sleeves/") for k in a)
    for rel in a:
        assert_close(a[rel], b[rel], rel)


def sleeve_outputs(ctx, node_path: str = ".") -> dict:
    """The named outputs rule ``sleeve`` declares for node ``node_path``, for a stage called directly."""
    node = ctx.node(node_path)
    return {
        **{k: str(node.file(k)) for k in ("returns", "health", "sign_test", "provenance")},
        "weights": [str(node.file("weights", profile=p)) for p in ctx.plan.risk_profiles],
    }
