"""Shared helpers of the benchmark suite: generated manifests, timed runs, figures and the machine note."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
RISK_PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]

#: skfolio's embedded S&P 500 dataset (20 stocks, daily, 1990-2022), in groups of five.
SP500_BASKETS = [
    ["AAPL", "AMD", "MSFT", "BBY", "HD"],
    ["JNJ", "KO", "PEP", "PG", "WMT"],
    ["BAC", "JPM", "CVX", "XOM", "GE"],
    ["LLY", "PFE", "UNH", "MRK", "RRC"],
]


@dataclass
class Figure:
    """One row of the results table: a measured figure against its target.

    ``target`` and ``measured`` are in ``unit``; ``better`` says which side passes
    (``"below"``: measured <= target, ``"above"``: measured >= target). ``ratio`` is
    measured / target.
    """

    item: str
    name: str
    measured: float
    target: float | None
    unit: str
    better: str = "below"
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.target else self.measured / self.target

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.measured <= self.target if self.better == "below" else self.measured >= self.target

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


def emit(figures: list[Figure]) -> None:
    """Print the figures as one JSON line (what bench/run_all.py reads) and as text."""
    for f in figures:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[f.passed]
        target = "" if f.target is None else f" (target {'<=' if f.better == 'below' else '>='} {f.target:g})"
        print(f"  [{verdict}] {f.item} {f.name}: {f.measured:.4g} {f.unit}{target}", file=sys.stderr)
    print(json.dumps([f.to_dict() for f in figures]))


@dataclass
class Timed:
    """Outcome of :func:`run_timed`: wall and CPU seconds, peak RSS of the process (MiB)."""

    wall: float
    cpu: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(cmd: list[str], *, cwd: Path = PROJECT, env: dict | None = None, timeout: float = 600.0) -> Timed:
    """Run ``cmd`` and measure it with ``wait4``: wall time, user+sys CPU, peak RSS of that process.

    Raises
    ------
    RuntimeError
        The command failed or timed out (the message holds the tail of its stderr).
    """
    out_path, err_path = Path(f"/tmp/bench-{os.getpid()}.out"), Path(f"/tmp/bench-{os.getpid()}.err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"{' '.join(cmd[:4])} ... timed out after {timeout:.0f} s")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {tail}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    """Cores, load and memory of this machine right now."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    mem = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "uptime": uptime,
        "loadavg": os.getloadavg(),
        "mem_total_gb": round(int(mem["MemTotal"].split()[0]) / 2**20, 1),
        "mem_available_gb": round(int(mem["MemAvailable"].split()[0]) / 2**20, 1),
        "python": sys.version.split()[0],
    }


def cores() -> int:
    """Cores this process may use (the pipeline's --cores and the reference's pool size)."""
    return len(os.sched_getaffinity(0))


def write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def dag_manifest(n_sleeves: int) -> dict:
    """A meta profile ``big`` of ``n_sleeves`` atomic sleeves sharing one 2-symbol profile (bounds 0..1)."""
    return {
        "defaults": {
            "data": {"source": "skfolio", "dataset": "sp500"},
            "meta_allocation": {"min_weight": 0.0, "max_weight": 1.0},
            "profiles": RISK_PROFILES,
        },
        "profiles": {
            "pair": {"universe": {"symbols": ["AAPL", "MSFT"]}},
            "big": {"sleeves": [{"id": f"s{i:05d}", "profile": "pair"} for i in range(n_sleeves)]},
        },
    }


def realistic_manifest(
    n_sleeves: int = 4,
    *,
    start: str = "2008-01-01",
    end: str = "2019-12-31",
    symbols_per_sleeve: int = 5,
    profiles: list[str] | None = None,
) -> dict:
    """A meta profile ``bench`` of ``n_sleeves`` sleeves, each its own atomic profile ``sleeve<i>``.

    Sleeves hold baskets of skfolio's S&P 500 stocks on ``[start, end]`` (12 years of daily
    data by default), walk-forward 252/20 with frictions, and every risk profile. Each sleeve
    has its own profile so one sleeve's settings can change alone.
    """
    names = [s for basket in SP500_BASKETS for s in basket]
    atomic = {}
    for i in range(n_sleeves):
        offset = (i * symbols_per_sleeve + i // len(SP500_BASKETS)) % len(names)
        symbols = (names[offset:] + names[:offset])[:symbols_per_sleeve]
        atomic[f"sleeve{i}"] = {"universe": {"symbols": symbols}}
    return {
        "defaults": {
            "data": {"source": "skfolio", "dataset": "sp500", "start": start, "end": end},
            "backtest": {"train_window": 252, "test_window": 20, "commission": 0.0005, "slippage": 0.0005},
            "meta_allocation": {"min_weight": 0.05, "max_weight": 0.5} if n_sleeves <= 20 else {"min_weight": 0.0, "max_weight": 1.0},
            "profiles": profiles or RISK_PROFILES,
        },
        "profiles": {
            **atomic,
            "bench": {"sleeves": [{"id": f"s{i}", "profile": f"sleeve{i}"} for i in range(n_sleeves)]},
        },
    }


def bench_env() -> dict:
    """Environment of the benchmark's child processes: loopback-only Ray, no stray RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TVS_RUN_ID")}
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return env


@contextlib.contextmanager
def loopback_cluster(num_cpus: int) -> Iterator[dict]:
    """A fresh private Ray cluster on 127.0.0.1 with its own token, up before the block, stopped after.

    Yields the environment variables a client needs (``RAY_ADDRESS``, token auth). Started
    by another process exactly as the pipeline starts its own (``Cluster.start``), so a run
    on it differs from a private run only by not starting (or stopping) the cluster.
    """
    script = (
        "import json, sys\n"
        "from tradingview_scraper.cluster import Cluster\n"
        f"cluster = Cluster(num_cpus={int(num_cpus)}).start()\n"
        "print(json.dumps(cluster.job_config()), flush=True)\n"
        "sys.stdin.read()\n"
        "cluster.shutdown()\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT, env=bench_env(), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = owner.stdout.readline()
        if not line:
            raise RuntimeError("loopback Ray cluster did not come up")
        settings = json.loads(line)
        yield {"RAY_ADDRESS": settings["ray_address"], "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN_PATH": settings["ray_token_path"]}
    finally:
        owner.stdin.close()
        try:
            owner.wait(60)
        except subprocess.TimeoutExpired:
            owner.kill()
            owner.wait()


class ClusterStart(logging.Handler):
    """Catches the run's Ray cluster start-up (and stop) time, which the cluster logs when it is up (down)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.start_s: float | None = None
        self.connect_s: float | None = None
        self.stop_s: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "ray_stop_s", None) is not None and getattr(record, "ray_owner", False):
            self.stop_s = record.ray_stop_s
        seconds = getattr(record, "ray_start_s", None)
        if seconds is not None:
            if getattr(record, "ray_owner", False):
                self.start_s = seconds
            else:
                self.connect_s = seconds

    def __enter__(self) -> ClusterStart:
        log = logging.getLogger("tradingview_scraper.cluster")
        log.addHandler(self)
        log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("tradingview_scraper.cluster").removeHandler(self)


def write_block(doc: Path, name: str, block: str, *, section: str | None = None) -> None:
    """Put ``block`` between the ``<!-- name:begin -->`` / ``<!-- name:end -->`` markers of ``doc``.

    The rest of the file is left as it is. Without the markers, the block is appended
    under ``section`` (a heading line; default ``## <name>``).
    """
    begin = f"<!-- {name}:begin (generated by make {name}; edits inside are overwritten) -->"
    end = f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    body = f"{begin}\n\n{block}\n\n{end}"
    stem = begin.split(" (")[0]
    if stem in text and end in text:
        text = text[: text.index(stem)] + body + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{section or '## ' + name}\n\n{body}\n"
    doc.write_text(text)
