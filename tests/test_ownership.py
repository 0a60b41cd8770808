"""What a run reads from outside is verified; a run touches only what it owns (real runs, both entry points).

A previous run that was tampered with, reached through a symlink, is being written, holds
an invalid book or did not finish is refused in one line naming it; one of another meta
profile is used with a warning on the console and in the report. A folder that is not a
run is never touched, by a refused run or a dry run; dry runs, ``--lint`` and the plain
``snakemake -n`` leave a damaged run's bytes alone, and the next real run repairs it; a
rerun without its book leaves no rebalance that reads as current.

The tests share one module of runs and run in file order: the last one makes ``prev`` a
run that failed halfway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tradingview_scraper import audit
from tradingview_scraper.orchestration.cli import main

from .conftest import PROJECT
from .helpers import table_manifest, write_table_data

pytestmark = pytest.mark.e2e

PROG = "run_meta_pipeline.py"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Table data, a manifest with ``meta_other`` (the sleeves of ``meta_tables``) and a finished run ``prev`` of it."""
    root = tmp_path_factory.mktemp("ownership")
    data = root / "data"
    write_table_data(data)
    m = table_manifest(data, tradingview=False)
    m["profiles"]["meta_other"] = json.loads(json.dumps(m["profiles"]["meta_tables"]))
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(m))
    runs = root / "runs"
    assert main(_argv(manifest, runs, "prev", "meta_other"), prog=PROG, require_meta=True) == 0
    return {"root": root, "manifest": manifest, "runs": runs, "data": data}


def _argv(manifest: Path, runs: Path, run_id: str, profile: str = "meta_tables", *extra: str) -> list[str]:
    return ["--profile", profile, "--manifest", str(manifest), "--runs-root", str(runs), "--run-id", run_id, "--no-ray", *extra]


def _one_line(capfd, argv: list[str]) -> tuple[int, str]:
    capfd.readouterr()
    code = main(argv, prog=PROG, require_meta=True)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{PROG}: error: "), err[0]
    return code, err[0]


def _plain(r: dict, run_id: str, *extra: str, config: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "-s", "workflow/Snakefile", "--cores", "1", *extra, "--config", "profile=meta_tables",
         f"manifest={r['manifest']}", f"run_id={run_id}", f"runs_root={r['runs']}", "ray=false", *config],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``, hidden files, the ledger and locks included: bytes, or the link's target."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def _copy_run(r: dict, name: str) -> Path:
    dest = r["runs"] / name
    shutil.copytree(r["runs"] / "prev", dest, copy_function=shutil.copy2)
    (dest / ".run.lock").unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------- a folder that is not a run


def test_a_folder_that_is_not_a_run_is_never_touched(runs, capfd):
    archive = runs["runs"] / "archive"
    (archive / "sub").mkdir(parents=True)
    (archive / "sub" / ".thesis.docx.tmp").write_bytes(b"the only copy of chapter 3\n")
    (archive / "notes.txt").write_text("mine\n")
    before = _snapshot(archive)
    for extra in ((), ("--dry-run",)):
        code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "archive", "meta_tables", *extra))
        assert code == 2 and re.search(r"\S+/archive holds files \(\S+, \.\.\.\) but no audit ledger", line), line
        assert _snapshot(archive) == before, extra
    (archive / "notes.txt").unlink()  # only the hidden temp file: still not this run's
    before = _snapshot(archive)
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "archive"))
    assert code == 2 and "archive holds files (sub/.thesis.docx.tmp, ...)" in line, line
    for extra in ((), ("-n",), ("--lint",)):
        proc = _plain(runs, "archive", *extra)
        assert proc.returncode != 0, extra
        assert re.search(r"^error: \S+/archive holds files", proc.stderr.strip().splitlines()[-1]), proc.stderr[-2000:]
        assert _snapshot(archive) == before, extra


# ----------------------------------------------------------------------------- a previous run is verified like a pin


def _edit_book(path: Path, edit) -> None:
    book = json.loads(path.read_text())
    edit(book["weights"][0])
    path.write_text(json.dumps(book, indent=2, sort_keys=True) + "\n")


TAMPERED = {
    "weight 0.9": lambda row: row.update(weight=0.9),
    "weight -0.5": lambda row: row.update(weight=-0.5),
    "direction SIDEWAYS": lambda row: row.update(direction="SIDEWAYS"),
}


@pytest.mark.parametrize("edit", TAMPERED, ids=list(TAMPERED))
def test_a_tampered_previous_run_is_refused_in_one_line(runs, capfd, edit):
    name = "tampered-" + re.sub(r"\W", "", edit)
    _edit_book(_copy_run(runs, name) / "flattened_equal_weight.json", TAMPERED[edit])
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-" + name, "meta_tables", "--previous-run", name))
    assert code == 2, line
    assert re.search(rf"previous_run '{name}': \S+/flattened_equal_weight\.json changed since stage flatten wrote it", line)
    assert not (runs["runs"] / ("uses-" + name)).exists()
    if edit == "weight 0.9":  # the plain command: the same line, last
        proc = _plain(runs, "plain-" + name, config=(f"previous_run={name}",))
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: previous_run '{name}': ") and "changed since stage flatten" in last, last
        assert not (runs["runs"] / ("plain-" + name)).exists()


def test_a_previous_run_with_a_valid_record_but_an_invalid_book_is_refused(runs, capfd):
    forged = _copy_run(runs, "forged")
    book = forged / "flattened_equal_weight.json"
    _edit_book(book, TAMPERED["direction SIDEWAYS"])
    # Someone re-recorded the file: the ledger verifies, the book still is not a book.
    audit.record_stage(forged, stage="flatten", node=".", params={"profile": "equal_weight"}, inputs=[], outputs=[book],
                       outcome="success")  # fmt: skip
    assert audit.verify(forged) == []
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-forged", "meta_tables", "--previous-run", "forged"))
    assert code == 2
    assert re.search(r"previous_run 'forged': its book is not a valid book: \S+flattened_equal_weight\.json: weights\[0\]: "
                     r"direction 'SIDEWAYS' is not LONG or SHORT", line), line  # fmt: skip


def test_a_symlinked_previous_run_is_refused(runs, capfd, tmp_path):
    (runs["runs"] / "prev-link").symlink_to(runs["runs"] / "prev")
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-link", "meta_tables", "--previous-run", "prev-link"))
    assert code == 2 and re.search(r"previous_run 'prev-link': run directory \S+ is a symlink \(to \S+\)", line), line
    linked = _copy_run(runs, "file-link")
    outside = tmp_path / "book.json"
    shutil.copy2(linked / "flattened_equal_weight.json", outside)
    (linked / "flattened_equal_weight.json").unlink()
    (linked / "flattened_equal_weight.json").symlink_to(outside)
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-file-link", "meta_tables", "--previous-run", "file-link"))
    assert code == 2 and re.search(r"previous_run 'file-link': \S+flattened_equal_weight\.json is a symlink", line), line


def test_a_previous_run_being_written_is_refused(runs, capfd):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tradingview_scraper import runlock; "
         "runlock.acquire(sys.argv[1], 'prev'); print('locked', flush=True); time.sleep(60)", str(runs["runs"] / "prev")],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-busy", "meta_tables", "--previous-run", "prev"))
        assert code == 2 and f"previous_run 'prev' is being written (pid {holder.pid} holds" in line, line
        proc = _plain(runs, "plain-busy", config=("previous_run=prev",))
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines()[-1].startswith("error: previous_run 'prev' is being written"), proc.stderr[-2000:]
        m = json.loads(runs["manifest"].read_text())  # a pin goes through the same check
        m["profiles"]["meta_tables"]["sleeves"][0]["run_id"] = "prev"
        pinned = runs["root"] / "pinned.json"
        pinned.write_text(json.dumps(m))
        code, line = _one_line(capfd, _argv(pinned, runs["runs"], "uses-busy", "meta_tables"))
        assert code == 2 and f"sleeve 'a': pinned run_id 'prev' is being written (pid {holder.pid} holds" in line, line
    finally:
        holder.kill()
        holder.communicate()
    assert not (runs["runs"] / "uses-busy").exists() and not (runs["runs"] / "plain-busy").exists()


# ----------------------------------------------------------------------------- other profile, dropped book, dry runs


def test_another_profiles_previous_run_warns_and_a_dropped_book_leaves_no_rebalance(runs, capfd):
    capfd.readouterr()
    assert main(_argv(runs["manifest"], runs["runs"], "now", "meta_tables", "--previous-run", "prev", "--quiet"),
                prog=PROG, require_meta=True) == 0  # fmt: skip
    warning = "previous_run 'prev' is a run of meta profile 'meta_other', not 'meta_tables'"
    err = capfd.readouterr().err
    assert f"warning: {warning}" in err, err
    now = runs["runs"] / "now"
    assert warning in (now / "report.md").read_text()
    assert sorted(p.name for p in now.glob("rebalance_*.json")) == ["rebalance_equal_weight.json", "rebalance_min_variance.json"]
    flattened = {p.name: p.read_bytes() for p in now.glob("flattened_*.json")}

    assert main(_argv(runs["manifest"], runs["runs"], "now", "meta_tables", "--quiet"), prog=PROG, require_meta=True) == 0
    assert list(now.glob("rebalance_*.json")) == []  # the run's own, no longer produced: retired
    assert audit.verify(now) == []
    report = (now / "report.md").read_text()
    assert "Rebalance" not in report and "Changes since run" not in report
    assert {p.name: p.read_bytes() for p in now.glob("flattened_*.json")} == flattened


def _flip_keep_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_dry_runs_leave_a_damaged_run_alone_and_the_real_run_repairs_it(runs, capfd):
    now = runs["runs"] / "now"
    damaged = now / "sleeves" / "a" / "returns.parquet"
    clean = damaged.read_bytes()
    _flip_keep_mtime(damaged)
    before = _snapshot(now)
    capfd.readouterr()
    assert main(_argv(runs["manifest"], runs["runs"], "now", "meta_tables", "--dry-run"), prog=PROG, require_meta=True) == 0
    assert _snapshot(now) == before, "the script's --dry-run changed the run"
    for extra in (("-n",), ("--lint",), ("-n", "--forceall")):
        proc = _plain(runs, "now", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _snapshot(now) == before, f"snakemake {' '.join(extra)} changed the run"
    capfd.readouterr()
    assert main(_argv(runs["manifest"], runs["runs"], "now", "meta_tables", "--quiet"), prog=PROG, require_meta=True) == 0
    assert "sleeves/a/returns.parquet changed since stage sleeve wrote it" in capfd.readouterr().err
    assert damaged.read_bytes() == clean
    assert audit.verify(now) == []


# ----------------------------------------------------------------------------- last: prev fails halfway


def test_a_previous_run_that_failed_halfway_is_refused_until_it_finishes(runs, capfd):
    bad = runs["root"] / "bad"
    bad.mkdir()
    (bad / "a.csv").write_text((runs["data"] / "a.csv").read_text().replace("\n2020-03-02,", "\n2020-03-02,x", 1))
    m = json.loads(runs["manifest"].read_text())
    m["profiles"]["ta"]["data"]["path"] = str(bad / "a.csv")
    broken = runs["root"] / "broken.json"
    broken.write_text(json.dumps(m))
    capfd.readouterr()
    assert main(_argv(broken, runs["runs"], "prev", "meta_other", "--quiet"), prog=PROG, require_meta=True) == 1
    assert (runs["runs"] / "prev" / "flattened_equal_weight.json").is_file()  # the earlier invocation's, now stale
    code, line = _one_line(capfd, _argv(runs["manifest"], runs["runs"], "uses-failed", "meta_tables", "--previous-run", "prev"))
    assert code == 2 and re.search(r"previous_run 'prev' did not finish: sleeve sleeves/a: .* \(audit seq \d+\)", line), line
    assert "KeyError" not in line
    # Rerun to the end, the run is finished again: the same previous run is taken.
    assert main(_argv(runs["manifest"], runs["runs"], "prev", "meta_other", "--quiet"), prog=PROG, require_meta=True) == 0
    argv = _argv(runs["manifest"], runs["runs"], "uses-repaired", "meta_tables", "--previous-run", "prev", "--dry-run")
    assert main(argv, prog=PROG, require_meta=True) == 0
