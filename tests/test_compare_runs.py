"""bench/compare_runs.py: what it leaves out of a byte-for-byte comparison of two runs, and what it catches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import PROJECT

SCRIPT = PROJECT / "bench" / "compare_runs.py"


def _ledger_line(seq: int, stage: str, sha: str, time: str, fitted: int = 0) -> str:
    outputs = [{"path": f"sleeves/a/{stage}.json", "sha256": sha, "stat": f"1:{seq}:{time}"},
               {"path": "sleeves/a/provenance.json", "sha256": time, "stat": "2:3:4"}]  # fmt: skip
    entry = {"kind": "stage", "stage": stage, "node": "sleeves/a", "seq": seq, "time": time, "cpu_s": seq / 10,
             "duration_s": 1.0 + seq, "hash": time * 2, "prev_hash": time, "params": {"profile": "a", "windows": {"fitted": fitted}},
             "outputs": outputs}  # fmt: skip
    return json.dumps(entry)


def _run(directory: Path, *, order: tuple[int, int], time: str, pid: int) -> Path:
    (directory / "sleeves" / "a" / "logs").mkdir(parents=True)
    lines = [_ledger_line(i, stage, "ab" * 32, time, pid) for i, stage in enumerate(("sleeve", "meta"))]
    (directory / "audit.jsonl").write_text("\n".join(lines[i] for i in order) + "\n")
    (directory / ".run.lock").write_text(str(pid))
    (directory / "sleeves" / "a" / "logs" / "sleeve.log").write_text(f"{time} INFO done in {pid} s\n")
    (directory / "sleeves" / "a" / "returns.parquet").write_bytes(bytes(range(256)))
    (directory / "flattened_hrp.json").write_text(json.dumps({"run_id": directory.name, "weights": [0.5, 0.5]}))
    provenance = {"computed": True, "run_id": directory.name, "mode": "private", "address": f"127.0.0.1:{pid}",
                  "tasks": {"hrp": {"node_id": str(pid), "node_ip": "127.0.0.1", "worker_pid": pid, "duration_s": 0.1,
                                  "windows": {"fitted": pid, "reused": 0}}}}  # fmt: skip
    (directory / "sleeves" / "a" / "provenance.json").write_text(json.dumps(provenance))
    return directory


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True, timeout=60)


def test_compare_runs_leaves_out_placement_times_and_logs_and_catches_any_other_byte(tmp_path):
    a = _run(tmp_path / "x" / "run", order=(0, 1), time="2026-01-01T00:00:00", pid=11)
    b = _run(tmp_path / "y" / "run", order=(1, 0), time="2026-02-02T11:11:11", pid=22)
    same = _compare(a, b)
    assert same.returncode == 0 and same.stdout.strip().endswith(": identical"), same.stdout
    assert "log lines carry wall-clock times" in same.stdout

    other_id = tmp_path / "z" / "other"
    shutil.copytree(b, other_id)  # another run id: substituted in text files, so still equal
    (other_id / "flattened_hrp.json").write_text(json.dumps({"run_id": "other", "weights": [0.5, 0.5]}))
    assert _compare(a, other_id).returncode == 0

    parquet = b / "sleeves" / "a" / "returns.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-1] + b"\x00")
    record = json.loads((b / "sleeves" / "a" / "provenance.json").read_text())
    (b / "sleeves" / "a" / "provenance.json").write_text(json.dumps({**record, "sleeve": "b"}))
    (b / "audit.jsonl").write_text((b / "audit.jsonl").read_text().replace('"profile": "a"', '"profile": "b"'))
    (b / "extra.json").write_text("{}")
    differ = _compare(a, b)
    assert differ.returncode == 1
    for rel in ("sleeves/a/returns.parquet: differs", "sleeves/a/provenance.json: differs", "audit.jsonl: differs",
                f"extra.json: only in {b}"):  # fmt: skip
        assert rel in differ.stdout, differ.stdout
    assert differ.stdout.strip().endswith("4 file(s) differ")


def test_compare_runs_refuses_a_directory_that_is_not_a_run(tmp_path):
    done = _compare(tmp_path, tmp_path)
    assert done.returncode == 2 and "is not a run directory" in done.stderr


def test_a_report_drawn_or_taken_from_the_store_compares_equal_and_nothing_else_of_its_params(tmp_path):
    runs = [_run(tmp_path / d / "run", order=(0, 1), time="2026-01-01T00:00:00", pid=11) for d in "xy"]
    for run, how in zip(runs, ("drawn", "reused"), strict=True):
        entry = json.loads(_ledger_line(2, "report", "cd" * 32, "2026-01-01T00:00:00"))
        entry["params"] = {"figures": how, "headline": {"data_end": "2021-12-31"}}
        with open(run / "audit.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
    assert _compare(*runs).returncode == 0
    ledger = runs[1] / "audit.jsonl"
    ledger.write_text(ledger.read_text().replace('"2021-12-31"', '"2021-12-30"'))
    assert _compare(*runs).returncode == 1
