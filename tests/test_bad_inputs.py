"""Table-driven bad inputs: each is refused with one stderr line naming the culprit, and changes nothing.

Every case runs the real entry point (``scripts/run_meta_pipeline.py``): the command-line
cases as a subprocess, the others through the same ``cli.main`` in-process (a subprocess
per case would cost seconds of imports each). ``bad_manifests.py`` (the ``BAD`` table,
reused here through the entry point) and ``test_workflow_dag.py`` (nine more command-line
cases) hold further cases.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from tradingview_scraper.orchestration.cli import main
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .bad_manifests import BAD
from .conftest import PROJECT
from .helpers import prices, table_manifest

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

PROG = "run_meta_pipeline.py"
SLEEVE_FILES = ("returns.parquet", "health.json", "sign_test.json", "provenance.json")


def _write_good_data(data_dir: Path) -> None:
    prices(["AAA", "BBB"]).to_csv(data_dir / "a.csv")
    prices(["CCC", "DDD"], seed=1).to_csv(data_dir / "b.csv")


# ----------------------------------------------------------------------------- data writers


def _edit_a(fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def write(data_dir: Path) -> None:
        fn(prices(["AAA", "BBB"])).to_csv(data_dir / "a.csv")

    return write


def _set_cell(row: int, col: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def fn(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype(object)
        frame.iloc[row, frame.columns.get_loc(col)] = value
        return frame

    return fn


def _long_with_nan(data_dir: Path) -> None:
    frame = prices(["AAA", "BBB"]).stack().rename("close").reset_index().rename(columns={"level_1": "symbol"})
    frame["close"] = frame["close"].astype(object)
    frame.loc[7, "close"] = "nan"
    frame.to_csv(data_dir / "a.csv", index=False)


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda data_dir: (data_dir / name).write_text(text)


def _b_from(start: str, n: int = 120) -> Callable[[Path], None]:
    return lambda data_dir: prices(["CCC", "DDD"], start=start, n=n, seed=1).to_csv(data_dir / "b.csv")


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    """One bad input: how to make it and the regex its one-line error must match."""

    id: str
    needle: str
    profile: str = "meta_tables"
    manifest: Callable[[dict], None] | None = None
    data: Callable[[Path], None] | None = None
    argv: list[str] = field(default_factory=list)
    in_job: bool = False  # raised inside a job, after the run directory exists
    raw_manifest: str | None = None  # manifest file text instead of JSON


def _profile(name: str, **blocks) -> Callable[[dict], None]:
    return lambda m: m["profiles"][name].update(copy.deepcopy(blocks))


def _sleeves(name: str, *sleeves: dict) -> Callable[[dict], None]:
    return lambda m: m["profiles"][name].update(sleeves=list(sleeves))


MANIFEST_CASES = [
    Case("not JSON", r"manifest '.*manifest\.json' is not valid JSON", raw_manifest="{not json"),
    Case("schema: top-level key", r"'profilez' was unexpected", manifest=lambda m: m.update(profilez={})),
    Case("schema: bound not a number", r"key 'meta_allocation\.min_weight': '0\.1' is not of type 'number'",
         manifest=_profile("meta_small", meta_allocation={"min_weight": "0.1"})),
    Case("negative bound", r"key 'meta_allocation\.min_weight': -0\.1 is less than the minimum of 0",
         manifest=_profile("meta_small", meta_allocation={"min_weight": -0.1})),
    Case("bound above 1", r"key 'meta_allocation\.max_weight': 1\.5 is greater than the maximum of 1",
         manifest=_profile("meta_small", meta_allocation={"max_weight": 1.5})),
    Case("train window 0", r"profile 'tech', key 'backtest\.train_window': 0 is less than the minimum of 2",
         manifest=_profile("tech", backtest={"train_window": 0})),
    Case("test window negative", r"profile 'staples', key 'backtest\.test_window': -5 is less than the minimum of 1",
         manifest=_profile("staples", backtest={"test_window": -5})),
    Case("train window longer than the data",
         r"profile 'tech': data 2021-09-01\.\.2021-12-31 holds at most 87 daily returns of skfolio dataset 'sp500', "
         r"fewer than train_window \+ test_window = 147",
         profile="meta_small", manifest=lambda m: m["defaults"]["data"].update(start="2021-09-01")),
    Case("unknown data source", r"profile 'tech', key 'data\.source': 'bloomberg' is not valid; valid values: skfolio, table",
         profile="meta_small", manifest=_profile("tech", data={"source": "bloomberg"})),
    Case("unknown dataset", r"'nasdaq' is not valid; valid values: sp500, factors",
         profile="meta_small", manifest=_profile("tech", data={"dataset": "nasdaq"})),
    Case("data start after end", r"profile 'tech': data\.start '2021-06-01' is after data\.end '2021-01-01'",
         profile="meta_small", manifest=_profile("tech", data={"start": "2021-06-01", "end": "2021-01-01"})),
    Case("sleeve with profile and meta_profile", r"a sleeve needs exactly one of 'profile' \(atomic\) or 'meta_profile'",
         manifest=_sleeves("meta_tables", {"id": "a", "profile": "ta", "meta_profile": "meta_small"}, {"id": "b", "profile": "tb"})),
    Case("sleeve id escapes the run dir", r"'\.\./evil' does not match",
         manifest=_sleeves("meta_tables", {"id": "../evil", "profile": "ta"}, {"id": "b", "profile": "tb"})),
    Case("pinned run id escapes data/runs", r"sleeve 'a': run_id '\.\./\.\./etc' is not a safe name",
         manifest=_sleeves("meta_tables", {"id": "a", "profile": "ta", "run_id": "../../etc"}, {"id": "b", "profile": "tb"})),
    Case("cycle through a nested meta profile", r"cycle: meta_small -> meta_mid -> meta_small", profile="meta_small",
         manifest=lambda m: m["profiles"]["meta_small"]["sleeves"].append({"id": "loop", "meta_profile": "meta_mid"})),
    Case("profile name escapes the run dir", r"profile '\.\./x' is not a safe name", profile="../x"),
]  # fmt: skip

# bad_manifests.BAD, through the entry point this time (same mutations, same messages).
MANIFEST_CASES += [
    Case(f"test_manifest: {name}", pattern, profile=profile, manifest=mutate) for name, mutate, profile, pattern in BAD
]

DATA_CASES = [
    Case("data file missing", r"profile 'ta': price table not found: \S*/a\.csv", data=lambda d: (d / "a.csv").unlink()),
    Case("data file empty", r"profile 'ta': \S*/a\.csv: empty file", data=_text("a.csv", "")),
    Case("export directory missing", r"profile 'ta': TradingView export directory not found: \S*/exports",
         manifest=lambda m: m["profiles"]["ta"].update(data={"source": "tradingview", "path": "/nonexistent/exports"})),
    Case("data file with a header only", r"sleeve 'a' failed: DataError: \S*/a\.csv: no data rows",
         data=_text("a.csv", "date,AAA,BBB\n"), in_job=True),
    Case("NaN price", r"\S*/a\.csv: symbol '(AAA|BBB)', line 9 \(2020-01-06\): price 'nan' is NaN",
         data=_long_with_nan, in_job=True),
    Case("infinite price", r"\S*/a\.csv: symbol 'BBB', line 52 .*price 'inf' is infinite",
         data=_edit_a(_set_cell(50, "BBB", "inf")), in_job=True),
    Case("zero price", r"\S*/a\.csv: symbol 'AAA', line 12 .*price '0(\.0)?' is not > 0",
         data=_edit_a(_set_cell(10, "AAA", 0.0)), in_job=True),
    Case("negative price", r"\S*/a\.csv: symbol 'AAA', line 32 .*price '-5(\.0)?' is not > 0",
         data=_edit_a(_set_cell(30, "AAA", -5.0)), in_job=True),
    Case("duplicate date", r"\S*/a\.csv: symbol 'AAA', line 22: duplicate date 2020-01-28",
         data=_edit_a(lambda f: f.rename(index={f.index[20]: f.index[19]})), in_job=True),
    Case("unsorted dates", r"\S*/a\.csv: symbol 'AAA', line \d+: date .* comes after .* dates must be sorted ascending",
         data=_edit_a(lambda f: f.iloc[[*range(30), 31, 30, *range(32, len(f))]]), in_job=True),
    Case("symbol missing from the data", r"sleeve 'a' failed: DataError: \S*/a\.csv: symbol 'ZZZ' not found; available: 'AAA', 'BBB'",
         manifest=_profile("ta", universe={"symbols": ["AAA", "ZZZ"]}), in_job=True),
    Case("too little data for one train+test window", r"sleeve 'a': 29 return observations .* too few for train_window=40 \+ test_window=10",
         data=_edit_a(lambda f: f.iloc[:30]), in_job=True),
    Case("no overlap between the sleeves' calendars", r"sleeves share only 0 common dates, fewer than the 50 needed.*a 2020-.*b 2021-",
         data=_b_from("2021-01-01"), in_job=True),
    Case("overlap too short for one train+test window", r"sleeves share only 2\d common dates, fewer than the 50 needed",
         data=_b_from("2020-03-17"), in_job=True),
]  # fmt: skip

PIN_CASES = [
    Case("pinned run missing", r"sleeve 'a': pinned run_id 'ghost' not found",
         manifest=lambda m: m["profiles"]["meta_tables"]["sleeves"][0].update(run_id="ghost")),
    Case("pinned run incomplete", r"sleeve 'a': pinned run_id 'src-incomplete' is incomplete: \S+ lacks health\.json",
         manifest=lambda m: m["profiles"]["meta_tables"]["sleeves"][0].update(run_id="src-incomplete")),
    Case("pinned run of another profile", r"sleeve 'b': pinned run_id 'existing' \(\S+\) is a run of profile 'ta', not 'tb'",
         manifest=lambda m: m["profiles"]["meta_tables"]["sleeves"][1].update(run_id="existing")),
    Case("pinned run lacks a risk profile", r"sleeve 'a': pinned run_id 'existing' is incomplete: \S+ lacks weights_hrp\.json",
         manifest=lambda m: (m["profiles"]["meta_tables"]["sleeves"][0].update(run_id="existing"),
                             m["profiles"]["meta_tables"].update(profiles=["equal_weight", "hrp"]))),
]  # fmt: skip

IN_PROCESS = MANIFEST_CASES + DATA_CASES + PIN_CASES

# Command-line cases beyond test_workflow_dag.py's nine, each as a real subprocess.
CLI_CASES = [
    Case("run id empty", r"run id '' is not a safe name", argv=["--run-id", ""]),
    Case("run id '..'", r"run id '\.\.' is not a safe name", argv=["--run-id", ".."]),
    Case("run id with a space", r"run id 'a b' is not a safe name", argv=["--run-id", "a b"]),
    Case("run id hidden", r"run id '\.hidden' is not a safe name", argv=["--run-id", ".hidden"]),
    Case("--profiles empty", r"--profiles '' is not a comma-separated list", argv=["--profiles", ""]),
    Case("--profiles blank item", r"--profiles 'hrp,,min_variance' is not a comma-separated list", argv=["--profiles", "hrp,,min_variance"]),
    Case("--cores 0", r"cores=0 must be a positive integer", argv=["--cores", "0"]),
    Case("--cores not a number", r"argument --cores: invalid int value: 'two'", argv=["--cores", "two"]),
    Case("no --profile", r"the following arguments are required: --profile", profile=""),
    Case("manifest missing", r"manifest '\S*missing\.json' not found", argv=["--manifest", "missing.json"]),
    Case("manifest is a directory", r"manifest 'tests' is a directory", argv=["--manifest", "tests"]),
]  # fmt: skip


def test_the_table_covers_at_least_30_distinct_bad_inputs():
    ids = [c.id for c in IN_PROCESS + CLI_CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30, len(ids)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs root holding real runs the bad inputs must leave alone.

    ``existing``: a completed run of the atomic table profile ``ta``;
    ``src-incomplete``: a copy of it without ``health.json``.
    """
    root = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("srcdata")
    _write_good_data(data)
    manifest = data / "manifest.json"
    manifest.write_text(json.dumps(table_manifest(data, tradingview=False)))
    MetaPipeline("ta", manifest=manifest, run_id="existing", runs_root=root, ray=False,
                 profiles="equal_weight,min_variance").execute()  # fmt: skip
    shutil.copytree(root / "existing", root / "src-incomplete")
    (root / "src-incomplete" / "health.json").unlink()
    return root


def _snapshot(root: Path, skip: str | None = None) -> dict[str, bytes]:
    # the node store (.store) may gain the entries of jobs that succeeded before the failing one: no run changes
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != ".store")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files if not (skip and p.relative_to(root).parts[0] == skip)}


def _prepare(case: Case, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    _write_good_data(data)
    if case.data:
        case.data(data)
    manifest = tmp_path / "manifest.json"
    if case.raw_manifest is not None:
        manifest.write_text(case.raw_manifest)
    else:
        m = table_manifest(data, tradingview=False)
        if case.manifest:
            case.manifest(m)
        manifest.write_text(json.dumps(m))
    return manifest


def _argv(case: Case, manifest: Path, runs: Path, run_id: str) -> list[str]:
    profile = ["--profile", case.profile] if case.profile else []
    return [*profile, "--manifest", str(manifest), "--runs-root", str(runs), "--run-id", run_id, "--no-ray", *case.argv]


def _check_refusal(code: int, err: str, case: Case) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    assert re.search(case.needle, lines[0]), f"{case.needle!r} not in {lines[0]!r}"


def _check_no_artifacts(run_dir: Path) -> None:
    """After a failed job: no half-written file and no artifact of what failed."""
    assert [p.name for p in run_dir.rglob("*.tmp")] == []
    assert [p.name for p in run_dir.glob("meta/*")] == [] and not (run_dir / "report.md").exists()
    for sleeve in ("a", "b"):
        present = {p.name for p in (run_dir / "sleeves" / sleeve).glob("*") if p.is_file()}
        assert not present or set(SLEEVE_FILES) <= present, f"sleeve {sleeve} half written: {present}"


# ----------------------------------------------------------------------------- tests


def test_valid_inputs_pass(runs, tmp_path, capfd):
    """The control: the unmutated inputs run (so each case fails for its own reason only)."""
    manifest = _prepare(Case("good", ""), tmp_path)
    code = main(_argv(Case("good", ""), manifest, runs, "good"), prog=PROG, require_meta=True)
    assert code == 0, capfd.readouterr().err
    pinned = json.loads(manifest.read_text())
    pinned["profiles"]["meta_tables"]["sleeves"][0]["run_id"] = "existing"
    manifest.write_text(json.dumps(pinned))
    code = main(_argv(Case("pin", ""), manifest, runs, "good-pinned") + ["--dry-run"], prog=PROG, require_meta=True)
    assert code == 0, capfd.readouterr().err


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.id for c in IN_PROCESS])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, runs, tmp_path, capfd):
    manifest = _prepare(case, tmp_path)
    run_id = "fresh-" + re.sub(r"[^A-Za-z0-9]+", "-", case.id)[:60] if case.in_job else "refused"
    before = _snapshot(runs, skip=run_id if case.in_job else None)
    capfd.readouterr()
    try:
        code = main(_argv(case, manifest, runs, run_id), prog=PROG, require_meta=True)
    except SystemExit as exc:
        code = exc.code
    _check_refusal(code, capfd.readouterr().err, case)
    assert _snapshot(runs, skip=run_id if case.in_job else None) == before
    if case.in_job:
        _check_no_artifacts(runs / run_id)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_command_line_is_refused_in_one_line_and_changes_nothing(case, runs, tmp_path):
    manifest = _prepare(case, tmp_path)
    argv = _argv(case, manifest, runs, "existing")  # a case's own --run-id / --manifest come last and win
    before = _snapshot(runs)
    proc = subprocess.run([sys.executable, f"scripts/{PROG}", *argv], cwd=PROJECT, capture_output=True, text=True)
    _check_refusal(proc.returncode, proc.stderr, case)
    assert _snapshot(runs) == before


def test_data_error_inside_a_sleeve_job_is_one_line_on_the_real_stderr(runs, tmp_path):
    """As a subprocess: nothing Snakemake or Ray prints reaches stderr besides the one line."""
    case = next(c for c in DATA_CASES if c.id == "infinite price")
    manifest = _prepare(case, tmp_path)
    before = _snapshot(runs, skip="fresh-sub")
    proc = subprocess.run(
        [sys.executable, f"scripts/{PROG}", *_argv(case, manifest, runs, "fresh-sub")],
        cwd=PROJECT, capture_output=True, text=True,
    )  # fmt: skip
    _check_refusal(proc.returncode, proc.stderr, case)
    assert re.search(r"sleeve 'a' failed: DataError:", proc.stderr)
    assert _snapshot(runs, skip="fresh-sub") == before
    _check_no_artifacts(runs / "fresh-sub")
