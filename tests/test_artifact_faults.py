"""Artifacts are verified before they are used: truncated, edited, replaced and deleted files at every level.

One clean run of a two-level meta profile (``meta_outer``: nested ``meta_tables`` of three
table/TradingView sleeves, plus a table sleeve) is the reference. Each case damages files of
a copy of it (mtimes kept, as a user's edit would leave the other files), reruns the same
command until it settles, and checks at every step that no run says ``done`` while
``audit verify`` fails, and at the end that every artifact has the clean run's bytes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tradingview_scraper import audit
from tradingview_scraper.orchestration.cli import main

from .conftest import PROJECT
from .helpers import file_bytes, table_manifest, write_table_data

pytestmark = pytest.mark.e2e

PROG = "run_meta_pipeline.py"
RUN_ID = "faults"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


def _edit(path: Path) -> None:
    """Flip one byte in the middle (same size)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


def _replace_with_sibling(path: Path) -> None:
    """Replace with another artifact of the same kind (a valid file, the wrong numbers)."""
    sibling = next(p for p in sorted(path.parent.glob(f"*{path.suffix}")) if p != path and p.read_bytes() != path.read_bytes())
    shutil.copyfile(sibling, path)


def _append_json_whitespace(path: Path) -> None:
    """Still valid JSON with the same content: a byte change all the same."""
    path.write_text(path.read_text() + " ")


FAULTS: dict[str, Callable[[Path], None]] = {
    "truncate": _truncate,
    "edit": _edit,
    "delete": _delete,
    "replace": _replace_with_sibling,
}

# (level, file) pairs: an atomic sleeve inside the nested meta sleeve, the nested meta sleeve, the root.
TARGETS = {
    "atomic sleeve returns": "sleeves/inner/sleeves/a/returns.parquet",
    "atomic sleeve weights": "sleeves/inner/sleeves/a/weights_min_variance.json",
    "atomic sleeve health": "sleeves/inner/sleeves/c/health.json",
    "top-level sleeve returns": "sleeves/b2/returns.parquet",
    "nested meta returns": "sleeves/inner/meta/returns_min_variance.parquet",
    "nested meta weights": "sleeves/inner/meta/weights_equal_weight.json",
    "nested meta stream": "sleeves/inner/returns.parquet",
    "nested meta flattened": "sleeves/inner/flattened_min_variance.json",
    "root meta weights": "meta/weights_min_variance.json",
    "root flattened": "flattened_equal_weight.json",
    "root report figure": "report_assets/allocation.png",
    "root resolved manifest": "manifest.resolved.json",
}
REPLACEABLE = {k for k, v in TARGETS.items() if "/meta/" in f"/{v}" or "weights_" in v or "flattened" in v}
CASES = [(level, fault) for level in TARGETS for fault in FAULTS if fault != "replace" or level in REPLACEABLE]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The reference: a clean run, and a pristine copy of it (mtimes kept)."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    write_table_data(data)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(table_manifest(data, nested=True)))
    runs = root / "runs"
    code = main(_argv(manifest, runs), prog=PROG, require_meta=True)
    assert code == 0
    reference = root / "reference"
    shutil.copytree(runs / RUN_ID, reference, copy_function=shutil.copy2)
    return manifest, runs, reference


def _argv(manifest: Path, runs: Path, *extra: str) -> list[str]:
    return ["--profile", "meta_outer", "--manifest", str(manifest), "--runs-root", str(runs), "--run-id", RUN_ID, "--no-ray", *extra]


def _restore(reference: Path, run_dir: Path) -> None:
    shutil.rmtree(run_dir)
    shutil.copytree(reference, run_dir, copy_function=shutil.copy2)


def _comparable(run_dir: Path) -> dict[str, bytes]:
    """Every artifact's bytes; provenance without where and how long each task ran."""
    out = file_bytes(run_dir)
    for rel in [r for r in out if r.endswith("provenance.json")]:
        record = json.loads(out[rel])
        record.pop("tasks", None)
        out[rel] = json.dumps(record, sort_keys=True).encode()
    return out


def _settle(manifest: Path, runs: Path, capfd, max_runs: int = 3) -> list[tuple[int, str]]:
    """Rerun until a run succeeds; at every step, exit 0 only with a verifying ledger."""
    steps = []
    for _ in range(max_runs):
        capfd.readouterr()
        code = main(_argv(manifest, runs), prog=PROG, require_meta=True)
        err = capfd.readouterr().err
        steps.append((code, err))
        problems = audit.verify(runs / RUN_ID)
        assert code != 0 or problems == [], f"exit 0 while audit verify fails: {problems}"
        if code == 0:
            return steps
    raise AssertionError(f"did not settle in {max_runs} runs: {steps}")


@pytest.mark.parametrize(("level", "fault"), CASES, ids=[f"{fault} {level}" for level, fault in CASES])
def test_a_damaged_artifact_is_named_and_recomputed(clean, capfd, level, fault):
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    rel = TARGETS[level]
    FAULTS[fault](run_dir / rel)

    steps = _settle(manifest, runs, capfd)
    assert len(steps) == 1, f"a damaged artifact is recomputed by the first rerun: {steps}"
    err_lines = steps[0][1].strip().splitlines()
    assert len(err_lines) == 1 and rel in err_lines[0], err_lines
    assert re.search(r"(changed|is missing) since stage \w+ wrote it \(audit seq \d+\): discarded", err_lines[0])
    assert _comparable(run_dir) == _comparable(reference)
    assert audit.verify(run_dir) == []


def test_faults_at_every_level_at_once_then_a_clean_rerun(clean, capfd):
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    hit = ["atomic sleeve returns", "nested meta weights", "root flattened", "root report figure"]
    for level, fault in zip(hit, ["truncate", "edit", "delete", "replace"], strict=False):
        (_replace_with_sibling if fault == "replace" and level not in REPLACEABLE else FAULTS[fault])(run_dir / TARGETS[level])
    steps = _settle(manifest, runs, capfd)
    named = steps[0][1]
    assert all(TARGETS[level] in named for level in hit), named
    assert _comparable(run_dir) == _comparable(reference)

    # A no-op rerun: nothing discarded, nothing recomputed, nothing printed on stderr.
    seq = audit.last_seq(run_dir)
    steps = _settle(manifest, runs, capfd)
    assert steps == [(0, "")] and audit.last_seq(run_dir) == seq


def test_whitespace_in_a_json_artifact_is_still_a_change(clean, capfd):
    """Bytes, not meaning: the record vouches for exact bytes."""
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    _append_json_whitespace(run_dir / "meta/weights_equal_weight.json")
    steps = _settle(manifest, runs, capfd)
    assert "meta/weights_equal_weight.json changed" in steps[0][1]
    assert _comparable(run_dir) == _comparable(reference)


def test_a_touched_artifact_is_hashed_not_recomputed(clean, capfd):
    """Same bytes, new mtime: the fingerprint differs, the sha256 matches; nothing reruns."""
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    capfd.readouterr()
    assert main(_argv(manifest, runs), prog=PROG, require_meta=True) == 0  # the restore's new inodes: hashed once
    seq = audit.last_seq(run_dir)
    (run_dir / "flattened_equal_weight.json").touch()
    assert main(_argv(manifest, runs, "--dry-run"), prog=PROG, require_meta=True) == 0
    assert audit.last_seq(run_dir) == seq and audit.damaged(run_dir) == []


def test_an_artifact_changed_after_the_preflight_is_refused_by_its_consumer(clean, tmp_path):
    """A stage never consumes an input whose bytes differ from its record (checked in the stage itself)."""
    _, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    from tradingview_scraper.errors import DataError

    target = run_dir / "sleeves/inner/sleeves/b/returns.parquet"
    _edit(target)
    with pytest.raises(DataError, match=r"sleeves/b/returns\.parquet changed since stage sleeve wrote it .*rerun the same command"):
        audit.check_inputs(run_dir, [target])
    audit.check_inputs(run_dir, [run_dir / "sleeves/inner/sleeves/a/returns.parquet", tmp_path / "elsewhere.parquet"])


def test_a_damaged_ledger_stops_the_run_in_one_line(clean, capfd):
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    ledger = run_dir / "audit.jsonl"
    lines = ledger.read_text().splitlines()
    lines[3] = re.sub(r'"sha256":"(.)', lambda m: f'"sha256":"{"0" if m[1] != "0" else "1"}', lines[3], count=1)
    ledger.write_text("\n".join(lines) + "\n")
    capfd.readouterr()
    code = main(_argv(manifest, runs), prog=PROG, require_meta=True)
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert re.search(r"audit: \S+audit\.jsonl line 4 .* altered or breaks the hash chain", err[0]), err[0]


def test_artifacts_without_a_ledger_stop_the_run_in_one_line(clean, capfd):
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    (run_dir / "audit.jsonl").unlink()
    capfd.readouterr()
    code = main(_argv(manifest, runs), prog=PROG, require_meta=True)
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert "but no audit ledger (audit.jsonl): they cannot be verified" in err[0]


def test_plain_snakemake_recomputes_a_damaged_artifact(clean):
    """The plain command takes the same path: discard before the DAG, recompute, verify."""
    manifest, runs, reference = clean
    run_dir = runs / RUN_ID
    _restore(reference, run_dir)
    rel = "sleeves/inner/sleeves/a/returns.parquet"
    _truncate(run_dir / rel)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-s", "workflow/Snakefile", "--cores", "2", "--config",
         "profile=meta_outer", f"manifest={manifest}", f"run_id={RUN_ID}", f"runs_root={runs}", "ray=false"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{rel} changed since stage sleeve wrote it" in proc.stderr
    assert audit.verify(run_dir) == []
    assert _comparable(run_dir) == _comparable(reference)


def test_the_suite_tries_many_faults():
    assert len(CASES) >= 40, len(CASES)
