"""Tests of the hash-chained audit ledger (tradingview_scraper.audit)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tradingview_scraper import __version__
from tradingview_scraper.audit import (
    GENESIS_PREV_HASH,
    file_sha256,
    fingerprint,
    genesis,
    git_commit,
    record_stage,
    stage_audit,
    verify,
)
from tradingview_scraper.errors import PipelineError
from tradingview_scraper.layout import Node, run_node, write_json

REPO = Path(__file__).resolve().parents[1]


def _start(run: Path, run_id: str = "r1") -> dict:
    return genesis(
        run,
        run_id=run_id,
        meta_profile="meta_demo",
        manifest_path="config/manifest.json",
        manifest_sha256="a" * 64,
    )


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in Node(run).file("audit").read_text().splitlines()]


def _write_lines(run: Path, entries: list[dict]) -> None:
    text = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries)
    Node(run).file("audit").write_text(text)


def _build_run(run: Path) -> dict[str, Path]:
    """A small run: genesis, one sleeve stage, one meta stage, all artifacts written."""
    node = Node(run)
    tech = node.child("tech")
    _start(run)
    returns = tech.file("returns")
    returns.parent.mkdir(parents=True)
    returns.write_bytes(b"parquet-bytes")
    weights = tech.file("weights", profile="hrp")
    write_json(weights, {"weights": [{"symbol": "AAPL", "weight": 1.0}]})
    record_stage(
        run, stage="sleeve", node=tech, params={"profile": "atomic_tech", "risk": ["hrp"]},
        inputs=[], outputs=[returns, weights], outcome="success", duration_s=0.5,
    )
    meta = node.file("meta_weights", profile="hrp")
    write_json(meta, {"weights": {"tech": 1.0}})
    record_stage(
        run, stage="meta_optimize", node=".", params={"risk_profile": "hrp"},
        inputs=[returns], outputs=[meta], outcome="success",
    )
    return {"returns": returns, "weights": weights, "meta": meta}


# --------------------------------------------------------------------------- clean chain


def test_clean_chain_verifies_and_entries_are_well_formed(tmp_path):
    run = tmp_path / "run"
    paths = _build_run(run)
    assert verify(run) == []

    entries = _lines(run)
    assert [e["seq"] for e in entries] == [0, 1, 2]
    assert entries[0]["prev_hash"] == GENESIS_PREV_HASH
    for prev, cur in zip(entries, entries[1:], strict=False):
        assert cur["prev_hash"] == prev["hash"]
    for e in entries:
        body = {k: v for k, v in e.items() if k != "hash"}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert e["hash"] == hashlib.sha256(canon.encode()).hexdigest()

    sleeve = entries[1]
    assert sleeve["kind"] == "stage" and sleeve["stage"] == "sleeve"
    assert sleeve["node"] == "sleeves/tech"
    assert sleeve["outcome"] == "success" and sleeve["error"] is None
    assert sleeve["duration_s"] == 0.5
    assert sleeve["outputs"] == [
        {"path": "sleeves/tech/returns.parquet", "sha256": file_sha256(paths["returns"]), "stat": fingerprint(paths["returns"])},
        {"path": "sleeves/tech/weights_hrp.json", "sha256": file_sha256(paths["weights"]), "stat": fingerprint(paths["weights"])},
    ]
    assert entries[2]["node"] == "."
    assert entries[2]["inputs"][0]["path"] == "sleeves/tech/returns.parquet"


def test_genesis_payload(tmp_path):
    g = genesis(
        tmp_path / "run", run_id="r1", meta_profile="meta_demo",
        manifest_path=Path("config/manifest.json"), manifest_sha256="b" * 64,
        extra={"profiles": ["hrp"]},
    )
    assert g["seq"] == 0 and g["kind"] == "genesis"
    assert g["run_id"] == "r1" and g["meta_profile"] == "meta_demo"
    assert g["manifest"] == {"path": "config/manifest.json", "sha256": "b" * 64}
    assert g["package_version"] == __version__
    assert g["git_commit"] == git_commit()  # this checkout's HEAD (None outside a git repository)
    assert g["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", g["git_commit"])
    assert g["python"] == ".".join(map(str, sys.version_info[:3]))
    assert g["platform"]
    assert set(g["libraries"]) == {
        "snakemake", "ray", "pandas", "numpy", "pyarrow", "skfolio", "scipy"
    }
    assert g["libraries"]["pandas"]
    assert g["extra"] == {"profiles": ["hrp"]}
    assert _lines(tmp_path / "run") == [g]


def test_git_commit_is_none_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert git_commit() is None


def test_paths_relative_to_cwd_or_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    node = run_node("r1")  # data/runs/r1, relative to the working directory
    _start(node.dir)
    flat = node.file("flattened", profile="hrp")
    write_json(flat, {"weights": []})
    entry = record_stage(
        node, stage="flatten", node=node, params={}, inputs=["meta/weights_hrp.json"],
        outputs=[flat], outcome="success",
    )
    assert entry["node"] == "."
    assert entry["outputs"] == [{"path": "flattened_hrp.json", "sha256": file_sha256(flat), "stat": fingerprint(flat)}]
    assert entry["inputs"] == [{"path": "meta/weights_hrp.json", "sha256": None}]
    assert verify(node.dir) == []


def test_file_sha256_file_and_directory(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 3_000_000)
    assert file_sha256(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    d = tmp_path / "assets"
    d.mkdir()
    (d / "p.png").write_bytes(b"1")
    before = file_sha256(d)
    (d / "p.png").write_bytes(b"2")
    assert file_sha256(d) != before
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing")


def test_long_entries_chain_correctly(tmp_path):
    """Entries longer than the backwards-read chunk still chain (last entry read from the end)."""
    run = tmp_path / "run"
    _start(run)
    for i in range(3):
        record_stage(run, stage="big", node=".", params={"blob": "z" * 20_000, "i": i},
                     inputs=[], outputs=[], outcome="success")
    assert [e["seq"] for e in _lines(run)] == [0, 1, 2, 3]
    assert verify(run) == []


# --------------------------------------------------------------------------- tampering


def test_altered_artifact_is_named(tmp_path):
    run = tmp_path / "run"
    paths = _build_run(run)
    paths["weights"].write_text('{"weights": []}\n')
    problems = verify(run)
    assert len(problems) == 1
    assert "artifact sleeves/tech/weights_hrp.json changed since stage sleeve" in problems[0]


def test_missing_artifact_is_named(tmp_path):
    run = tmp_path / "run"
    paths = _build_run(run)
    paths["meta"].unlink()
    problems = verify(run)
    assert problems == [
        "artifact meta/weights_hrp.json missing (recorded by stage meta_optimize, seq 2)"
    ]


def test_rerun_rewriting_an_artifact_is_not_a_problem(tmp_path):
    run = tmp_path / "run"
    paths = _build_run(run)
    write_json(paths["meta"], {"weights": {"tech": 1.0}, "rerun": True})
    record_stage(run, stage="meta_optimize", node=".", params={"risk_profile": "hrp"},
                 inputs=[paths["returns"]], outputs=[paths["meta"]], outcome="success")
    assert verify(run) == []
    # a failed rerun does not vouch for the file
    paths["meta"].write_text("garbage")
    record_stage(run, stage="meta_optimize", node=".", params={}, inputs=[],
                 outputs=[paths["meta"]], outcome="error", error="boom")
    assert any("meta/weights_hrp.json changed since stage meta_optimize" in p for p in verify(run))


def test_altered_payload_is_detected(tmp_path):
    run = tmp_path / "run"
    _build_run(run)
    ledger = Node(run).file("audit")
    text = ledger.read_text()
    assert '"risk_profile":"hrp"' in text
    ledger.write_text(text.replace('"risk_profile":"hrp"', '"risk_profile":"min_variance"'))
    problems = verify(run)
    assert problems and all("seq 2" in p for p in problems)
    assert any("bad hash" in p for p in problems)


def test_deleted_line_is_detected(tmp_path):
    run = tmp_path / "run"
    _build_run(run)
    entries = _lines(run)
    _write_lines(run, [entries[0], entries[2]])
    problems = verify(run)
    assert any("seq gap" in p for p in problems)
    assert any("broken chain" in p for p in problems)


def test_deleted_genesis_and_malformed_line(tmp_path):
    run = tmp_path / "run"
    _build_run(run)
    entries = _lines(run)
    _write_lines(run, entries[1:])
    assert any("missing genesis" in p for p in verify(run))

    ledger = Node(run).file("audit")
    _write_lines(run, entries)
    with open(ledger, "a") as fh:
        fh.write("{not json\n")
    assert any("line 4: malformed" in p for p in verify(run))


def test_empty_or_absent_ledger(tmp_path):
    assert any("missing genesis" in p for p in verify(tmp_path))
    Node(tmp_path).file("audit").write_text("")
    assert any("missing genesis" in p for p in verify(tmp_path))


# --------------------------------------------------------------------------- genesis rules


def test_genesis_is_idempotent_and_rejects_other_run_id(tmp_path):
    run = tmp_path / "run"
    first = _start(run)
    again = _start(run)
    assert again == first
    assert len(_lines(run)) == 1
    with pytest.raises(PipelineError, match="r2"):
        _start(run, run_id="r2")
    assert len(_lines(run)) == 1


def test_the_owner_and_the_genesis_refuse_another_runs_ledger_in_the_same_words(tmp_path):
    """The run's owner (exit 2, before any job) and a job's genesis refuse a directory that is not
    the run's with one check: another run's ledger, or a ledger that starts with no genesis."""
    from tradingview_scraper import runlock
    from tradingview_scraper.errors import ConfigError

    run = tmp_path / "run"
    _start(run)
    runlock.check_run_dir(run, "r1")  # its own run
    forged = tmp_path / "forged"
    forged.mkdir()
    Node(forged).file("audit").write_text('{"kind": "stage"}\n')
    for directory, match in ((run, "holds the ledger of run 'r1', not 'r2'"), (forged, "does not start with a genesis")):
        with pytest.raises(ConfigError, match=match) as owner:
            runlock.check_run_dir(directory, "r2")
        with pytest.raises(PipelineError, match=match) as job:
            _start(directory, run_id="r2")
        assert str(job.value) == str(owner.value) and not isinstance(job.value, ConfigError)
    assert len(_lines(run)) == 1


def test_record_stage_requires_genesis(tmp_path):
    with pytest.raises(PipelineError, match="genesis"):
        record_stage(tmp_path, stage="sleeve", node=".", params={}, inputs=[], outputs=[],
                     outcome="success")
    Node(tmp_path).file("audit").write_text("")
    with pytest.raises(PipelineError, match="genesis"):
        record_stage(tmp_path, stage="sleeve", node=".", params={}, inputs=[], outputs=[],
                     outcome="success")
    _start(tmp_path)
    with pytest.raises(ValueError, match="outcome"):
        record_stage(tmp_path, stage="sleeve", node=".", params={}, inputs=[], outputs=[],
                     outcome="maybe")


# --------------------------------------------------------------------------- stage_audit


def test_stage_audit_success_records_outputs(tmp_path):
    run = tmp_path / "run"
    _start(run)
    out = Node(run).file("report_md")
    with stage_audit(run, "report", ".", {"fmt": "md"}, [], [out]) as sa:
        out.write_text("# report\n")
    assert sa.entry["outcome"] == "success"
    assert sa.entry["outputs"] == [{"path": "report.md", "sha256": file_sha256(out), "stat": fingerprint(out)}]
    assert sa.entry["duration_s"] >= 0
    assert verify(run) == []


def test_stage_audit_records_the_threads_cpu_not_its_waiting(tmp_path):
    run = tmp_path / "run"
    _start(run)
    with stage_audit(run, "report", ".", {}, [], []) as busy:
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
    with stage_audit(run, "report", ".", {}, [], []) as idle:
        time.sleep(0.1)
    assert busy.entry["cpu_s"] >= 0.05
    assert idle.entry["cpu_s"] < 0.05 <= idle.entry["duration_s"]


def test_stage_audit_records_error_and_reraises(tmp_path):
    run = tmp_path / "run"
    _start(run)
    with pytest.raises(RuntimeError, match="optimizer diverged"):
        with stage_audit(run, "meta_optimize", ".", {"risk_profile": "hrp"}, [],
                         ["meta/weights_hrp.json"]):
            raise RuntimeError("optimizer diverged\nlong traceback-ish detail")
    last = _lines(run)[-1]
    assert last["outcome"] == "error"
    assert last["error"] == "RuntimeError: optimizer diverged long traceback-ish detail"  # one line, nothing lost
    assert last["outputs"] == [{"path": "meta/weights_hrp.json", "sha256": None, "stat": None}]
    assert isinstance(last["duration_s"], float)
    assert verify(run) == []  # an error entry vouches for no artifact


def test_stage_audit_never_masks_the_stage_error(tmp_path):
    # no genesis: recording fails, but the stage's own exception propagates
    with pytest.raises(KeyError) as info:
        with stage_audit(tmp_path, "sleeve", ".", {}, [], []):
            raise KeyError("tech")
    assert any("could not record" in note for note in info.value.__notes__)


# --------------------------------------------------------------------------- concurrency

N_APPENDS = 25


def _append_many(run: str, who: str, start) -> None:
    start.wait(30)
    for i in range(N_APPENDS):
        record_stage(run, stage="sleeve", node=".", params={"who": who, "i": i},
                     inputs=[], outputs=[], outcome="success")


def test_concurrent_processes_and_threads_keep_the_chain(tmp_path):
    run = tmp_path / "run"
    _start(run)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(run), f"p{k}", start)) for k in range(4)]
    threads = [threading.Thread(target=_append_many, args=(str(run), f"t{k}", start))
               for k in range(4)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(60)
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    entries = _lines(run)
    assert len(entries) == 1 + 8 * N_APPENDS
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    seen = sorted((e["params"]["who"], e["params"]["i"]) for e in entries[1:])
    assert seen == sorted((w, i) for w in [f"p{k}" for k in range(4)] + [f"t{k}" for k in range(4)]
                          for i in range(N_APPENDS))
    assert verify(run) == []


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tradingview_scraper.audit", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )


def test_cli_exit_codes(tmp_path):
    run = tmp_path / "run"
    paths = _build_run(run)
    ok = _cli("verify", str(run))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "audit OK: 3 entries, 3 artifacts verified"

    paths["returns"].write_bytes(b"tampered")
    bad = _cli("verify", str(run))
    assert bad.returncode == 1
    assert bad.stdout.strip().splitlines() == [
        "artifact sleeves/tech/returns.parquet changed since stage sleeve (seq 1)"
    ]

    for args in [(), ("frobnicate",), ("verify",), ("verify", str(tmp_path / "nope"))]:
        usage = _cli(*args)
        assert usage.returncode == 2, args
        assert len(usage.stderr.strip().splitlines()) == 1, usage.stderr


def test_import_stays_light():
    """The Snakefile imports audit and deps while it parses: neither may pull in the frame libraries."""
    probe = "import sys, tradingview_scraper.audit, tradingview_scraper.deps; print(sorted({'numpy', 'pandas', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_a_ledger_written_under_the_old_step_names_still_verifies_and_a_rerun_repairs_its_failure(tmp_path):
    """Ledgers of runs before the renaming name three steps otherwise (``meta_stream``, ``pin``,
    ``resolve``): they verify as they are, and a rerun of a failed step under its new name repairs it."""
    from tradingview_scraper.audit import RENAMED_STAGES, unfinished

    assert RENAMED_STAGES == {"meta_stream": "node_returns", "pin": "pinned_sleeve", "resolve": "resolved_manifest"}
    files = _build_run(tmp_path)
    returns = Node(tmp_path).file("returns")
    for old in RENAMED_STAGES:
        record_stage(tmp_path, stage=old, node=".", params={}, inputs=[files["meta"]], outputs=[],
                     outcome="error", error="DataError: x")  # fmt: skip
    assert verify(tmp_path) == [] and unfinished(tmp_path) is not None
    returns.write_bytes(b"node-returns")
    for old, new in RENAMED_STAGES.items():
        assert unfinished(tmp_path) is not None, old
        record_stage(tmp_path, stage=new, node=".", params={}, inputs=[files["meta"]], outputs=[returns], outcome="success")
    assert unfinished(tmp_path) is None and verify(tmp_path) == []


def _append_forged(run: Path, **fields) -> None:
    """Append an entry with a good hash and chain, as a writer of the ledger would, whatever it says."""
    last = _lines(run)[-1] if Node(run).file("audit").is_file() else None
    body = {"kind": "stage", "stage": "sleeve", "node": ".", "params": {}, "inputs": [], "outputs": [],
            "outcome": "success", "error": None, "time": "t", "seq": 0 if last is None else last["seq"] + 1,
            "prev_hash": GENESIS_PREV_HASH if last is None else last["hash"], **fields}  # fmt: skip
    body["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    with open(Node(run).file("audit"), "a") as fh:
        fh.write(json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n")


def test_the_artifact_checks_refuse_in_one_line_each_entry_verify_reports(tmp_path):
    """Verify and the run's artifact checks walk the ledger the same way: an entry whose hash and
    chain hold but which verify reports stops the checks with verify's words, never a TypeError
    (outputs that are no list) and never silently (a ledger that does not start with a genesis)."""
    from tradingview_scraper.audit import damaged

    run = tmp_path / "run"
    _build_run(run)
    _append_forged(run, outputs="returns.parquet")
    assert verify(run) == ["line 4 (seq 3): malformed outputs"]
    with pytest.raises(PipelineError, match=r"audit\.jsonl line 4 \(seq 3\): malformed outputs; the run's record cannot be trusted"):
        damaged(run)
    forged = tmp_path / "forged"
    forged.mkdir()
    _append_forged(forged)
    assert verify(forged) == ["missing genesis: the first entry is of kind 'stage'"]
    with pytest.raises(PipelineError, match=r"missing genesis: the first entry is of kind 'stage'"):
        damaged(forged)


def test_an_append_is_chained_to_a_verified_ledger_and_refused_after_an_interrupted_write(tmp_path):
    """Appends read the ledger through the same index as the checks: a record is chained to the
    last entry of a ledger that verifies, and one after an incomplete last line is refused."""
    from tradingview_scraper.audit import last_seq

    run = tmp_path / "run"
    _build_run(run)
    assert last_seq(run) == 2
    with open(Node(run).file("audit"), "ab") as fh:
        fh.write(b'{"seq":3,"kind":"stage"')  # a write cut short
    with pytest.raises(PipelineError, match="ends with an incomplete line"):
        record_stage(run, stage="report", node=".", params={}, inputs=[], outputs=[], outcome="success")
    forged = tmp_path / "forged"
    forged.mkdir()
    _append_forged(forged, kind="genesis")
    _append_forged(forged, seq=5)  # a seq gap: the chain does not verify
    with pytest.raises(PipelineError, match=r"line 2 \(seq 5\) was altered or breaks the hash chain"):
        record_stage(forged, stage="report", node=".", params={}, inputs=[], outputs=[], outcome="success")
    assert last_seq(forged) == -1 and last_seq(tmp_path / "none") == -1


def test_verify_and_the_checks_read_the_same_lines(tmp_path):
    """A carriage return is JSON whitespace, not a line break: an entry holding one verifies, and the
    artifact checks and appends, which read the ledger through the same fold, take it as verify does."""
    from tradingview_scraper.audit import damaged, last_seq

    run = tmp_path / "run"
    _build_run(run)
    ledger = Node(run).file("audit")
    lines = ledger.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b',"outcome":', b',\r"outcome":', 1)
    ledger.write_bytes(b"\n".join(lines))
    assert verify(run) == []
    assert damaged(run) == [] and last_seq(run) == 2
    record_stage(run, stage="report", node=".", params={}, inputs=[], outputs=[], outcome="success")
    assert verify(run) == [] and last_seq(run) == 3


def _record_one(run: str) -> None:
    record_stage(run, stage="report", node=".", params={}, inputs=[], outputs=[], outcome="success")


def test_a_child_forked_while_the_ledger_is_locked_appends_once_the_parent_is_done(tmp_path):
    """A process forked while a thread of its parent holds the ledger's locks (a stage appending while
    Snakemake forks) gets a fresh thread lock: it waits for the parent's flock, never forever."""
    from tradingview_scraper.audit._ledger import locked

    run = tmp_path / "run"
    _start(run)
    with locked(run):
        child = multiprocessing.get_context("fork").Process(target=_record_one, args=(str(run),))
        child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0 and [e["seq"] for e in _lines(run)] == [0, 1] and verify(run) == []
