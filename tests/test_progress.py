"""Progress lines of the command line: one per finished job with a count, silenced by --quiet."""

from __future__ import annotations

import re

import pytest

from tradingview_scraper.orchestration import cli

from .conftest import SMALL_MANIFEST

LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S.*) done \((\d+\.\d) s\)$")
REUSED = re.compile(r"^\[(\d+)/(\d+)\] (\S.*) reused from run (\S+) \((\d+\.\d) s\)$")


def _argv(runs, run_id, *extra):
    return ["--profile", "meta_small", "--manifest", str(SMALL_MANIFEST), "--runs-root", str(runs),
            "--run-id", run_id, "--no-ray", "--profiles", "hrp,equal_weight", *extra]


@pytest.mark.e2e
def test_progress_lines_count_every_job_and_the_last_line_names_the_report(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli.main(_argv(runs, "p"), prog="run_meta_pipeline.py", require_meta=True) == 0
    out, err = capsys.readouterr()
    assert err == ""  # stderr is for the one-line error
    lines = out.strip().splitlines()
    assert lines[0] == f"run id: p  (run directory {runs / 'p'})"
    last, lines = lines[-1], lines[1:-1]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    counts = [int(m.group(1)) for m in parsed]
    totals = {int(m.group(2)) for m in parsed}
    assert counts == list(range(1, len(lines) + 1)) and totals == {len(lines)}
    labels = [m.group(3) for m in parsed]
    for sleeve in ("tech", "staples", "factors"):
        assert f"sleeve {sleeve}" in labels
    assert {"meta_optimize hrp", "flatten equal_weight", "risk", "report"} <= set(labels), labels
    assert last == f"done: {runs / 'p'}  (report: {runs / 'p' / 'report.html'})"

    assert cli.main(_argv(runs, "q", "--quiet"), prog="run_meta_pipeline.py", require_meta=True) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip().splitlines() == [f"done: {runs / 'q'}  (report: {runs / 'q' / 'report.html'})"]

    # A job that takes its outputs from an earlier run says so, and from which run.
    assert cli.main(_argv(runs, "r"), prog="run_meta_pipeline.py", require_meta=True) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:-1]
    reused = {m.group(3): m.group(4) for m in map(REUSED.match, lines) if m}
    assert {f"sleeve {s}" for s in ("tech", "staples", "factors")} <= set(reused), lines
    assert set(reused.values()) <= {"p", "q"}
    assert all(LINE.match(line) or REUSED.match(line) for line in lines), lines
    assert {"risk", "report"} <= {m.group(3) for m in map(LINE.match, lines) if m}  # they write the run id: computed


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--profile", "meta_small", "--quiet", "--verbose"], prog="run_meta_pipeline.py", require_meta=True)
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err
