"""One line, exit 2, every time; paths taken literally (issue 20, item 6).

A runs root that is a file, lies under a file or cannot be written is refused in one line
(exit 2) from the script, plain ``snakemake``, ``make`` and the Python API, creating
nothing. Paths with spaces and braces (``{profile}``: Snakemake's wildcard syntax, which it
has no escape for) are taken literally: a real run whose runs root, manifest and holdings
file all have both reaches the same book as one on plain paths, and an edit of the holdings
file reruns the rebalance whatever its mtime. Every user variable of the Makefile reaches
the script as one word (a space, a quote, ``;``, ``$(shell ...)``). The API refuses
arguments of the wrong type with the project's own ``ConfigError``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import tradingview_scraper as tvs
from tradingview_scraper.api import NodeResult, PlanResult
from tradingview_scraper.errors import ConfigError
from tradingview_scraper.layout import literal_files, regex_literal, wildcard_like
from tradingview_scraper.orchestration.cli import main
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import PROJECT, SMALL_MANIFEST
from .helpers import table_manifest, write_table_data

PROG = "run_meta_pipeline.py"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
BRACED = "a {profile} x"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root`` with a file's bytes (None for a directory)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _script(*argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, f"scripts/{PROG}", *argv], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )


def _plain(config: dict[str, str]) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in config.items()]
    return subprocess.run(
        [SNAKEMAKE, "-s", "workflow/Snakefile", "--cores", "1", "--config", *args],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess, pattern: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{PROG}: error: ") and re.search(pattern, lines[0]), lines[0]


# ----------------------------------------------------------------------------- Snakemake's wildcard syntax


@pytest.mark.parametrize(
    "path", ["a/{profile}/b", "a/{ x }/b", "a/{x,[0-9]+}/b", "a/{x,a{2,3}}/b", "plain/a b.csv", "a/{}/b", "a/{a b}/b", "a/{/b"]
)
def test_wildcard_like_agrees_with_snakemake(path):
    from snakemake.io import get_wildcard_names

    assert wildcard_like(path) == bool(get_wildcard_names(path))


def test_a_literal_regex_is_a_valid_snakemake_constraint():
    from snakemake.io import regex_from_filepattern

    literal = "/tmp/a {profile} x/runs {p,1}/r1"
    pattern = regex_from_filepattern("{node," + regex_literal(literal) + "}/returns.parquet")
    assert re.match(pattern, literal + "/returns.parquet").group("node") == literal
    assert not re.match(pattern, "/tmp/a hrp x/runs {p,1}/r1/returns.parquet")


def test_literal_files_spells_a_braced_path_through_the_node(tmp_path):
    from snakemake.io import apply_wildcards

    node = tmp_path / BRACED / "runs" / "r1"
    path = node / "sleeves" / "a" / "returns.parquet"
    files = literal_files({"a": str(path), "b": [str(node / "x.json")], "c": str(tmp_path / "plain" / "book.csv")}, node)
    assert apply_wildcards(files["a"], {"node": str(node), "profile": "hrp"}) == str(path)
    assert files["b"] == ["{node}/x.json"] and files["c"] == str(tmp_path / "plain" / "book.csv")
    # no spelling: its own name (rule_inputs.declared keeps it out, tracked by content), or beside the node
    for outside in (tmp_path / "book {profile}.csv", node.parent / "prev" / "flattened_hrp.json"):
        with pytest.raises(ConfigError, match=r"would read part of this path as a wildcard"):
            literal_files(str(outside), node)


# ----------------------------------------------------------------------------- runs root


def _runs_roots(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    return {
        "file": (afile, r"runs_root \S+/afile is not a directory: give a directory"),
        "under-file": (afile / "runs", r"runs_root \S+/afile/runs lies under \S+/afile, which is not a directory"),
    }


@pytest.mark.e2e
def test_a_runs_root_that_is_a_file_is_one_line_exit_2_everywhere(tmp_path):
    for name, (root, pattern) in _runs_roots(tmp_path).items():
        before = _tree(tmp_path)
        for extra in ([], ["--dry-run"]):
            proc = _script("--profile", "meta_small", "--manifest", str(SMALL_MANIFEST), "--runs-root", str(root), "--no-ray", *extra)
            _one_line(proc, pattern)
        with pytest.raises(ConfigError, match=pattern):
            MetaPipeline("meta_small", manifest=SMALL_MANIFEST, runs_root=root, ray=False)
        with pytest.raises(ConfigError, match=pattern):
            tvs.run_plan("meta_small", manifest=SMALL_MANIFEST, runs_root=root)
        assert _tree(tmp_path) == before, name
    proc = _plain({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "runs_root": str(tmp_path / "afile"), "ray": "false"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"^error: runs_root \S+/afile is not a directory", proc.stderr.strip().splitlines()[-1])
    assert _tree(tmp_path) == before


def _without_dac_override() -> tuple[str, ...]:
    """A command prefix under which file modes bind this process (root bypasses them otherwise)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only mode does not stop root's writes")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.mark.e2e
def test_an_unwritable_runs_root_is_one_line_exit_2(tmp_path):
    prefix = _without_dac_override()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        cases = {locked: r"runs_root \S+/locked is not writable by this user",
                 locked / "runs": r"runs_root \S+/locked/runs would be created in \S+/locked, which is not writable"}  # fmt: skip
        for root, pattern in cases.items():
            argv = ("--profile", "meta_small", "--manifest", str(SMALL_MANIFEST), "--runs-root", str(root), "--no-ray")
            _one_line(_script(*argv, prefix=prefix), pattern)
            dry = _script(*argv, "--dry-run", prefix=prefix)  # a dry run only reads: allowed
            assert dry.returncode == 0, dry.stderr[-2000:]
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.e2e
def test_an_existing_run_in_a_read_only_runs_root_reruns_but_a_read_only_run_directory_is_refused(tmp_path, capfd):
    prefix = _without_dac_override()
    manifest, book, _ = _setup(tmp_path)
    runs = tmp_path / "runs"
    _run(capfd, manifest, book, runs)
    argv = ("--profile", "meta_tables", "--manifest", str(manifest), "--holdings", str(book), "--runs-root", str(runs),
            "--run-id", "r1", "--no-ray")  # fmt: skip
    runs.chmod(0o555)
    try:
        proc = _script(*argv, prefix=prefix)  # its own directory is writable: a no-op rerun
        assert proc.returncode == 0 and "done: " in proc.stdout, proc.stderr[-2000:]
        runs.chmod(0o755)
        (runs / "r1").chmod(0o555)
        before = _tree(runs)
        _one_line(_script(*argv, prefix=prefix), r"run directory \S+/runs/r1 is not writable by this user")
        assert _tree(runs) == before
    finally:
        runs.chmod(0o755)
        (runs / "r1").chmod(0o755)


def test_the_writability_check_names_the_directory(tmp_path, monkeypatch):
    """The message itself (the real refusal is shown above, under a dropped capability when root)."""
    from tradingview_scraper import layout

    monkeypatch.setattr(layout.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=r"runs_root \S+/new would be created in \S+, which is not writable"):
        layout.check_runs_root(tmp_path / "new")
    layout.check_runs_root(tmp_path / "new", writable=False)


# ----------------------------------------------------------------------------- braces and spaces, a real run


def _book(path: Path, weights: dict[str, float]) -> None:
    path.write_text("symbol,direction,weight\n" + "".join(f"{s},LONG,{w}\n" for s, w in weights.items()))


def _setup(base: Path) -> tuple[Path, Path, Path]:
    """Price data, a manifest, a holdings file and a runs root, all below ``base``."""
    write_table_data(base / "data")
    manifest = base / "manifest {profile}.json"
    manifest.write_text(json.dumps(table_manifest(base / "data", tradingview=False)))
    book = base / "book {profile}.csv"
    _book(book, {"AAA": 0.5, "CCC": 0.5})
    return manifest, book, base / "runs {profile}"


def _run(capfd, manifest: Path, book: Path, runs: Path, run_id: str = "r1") -> str:
    capfd.readouterr()
    argv = ["--profile", "meta_tables", "--manifest", str(manifest), "--holdings", str(book), "--runs-root", str(runs),
            "--run-id", run_id, "--no-ray"]  # fmt: skip
    code = main(argv, prog=PROG, require_meta=True)
    out = capfd.readouterr()
    assert code == 0, out.err
    return out.out


def _rebalance(run_dir: Path, profile: str = "min_variance") -> dict:
    record = json.loads((run_dir / f"rebalance_{profile}.json").read_text())
    record["current"].pop("path")
    return record


@pytest.mark.e2e
def test_paths_with_braces_and_spaces_are_taken_literally(tmp_path, capfd):
    braced, plain = tmp_path / BRACED, tmp_path / "plain"
    manifest, book, runs = _setup(braced)
    out = _run(capfd, manifest, book, runs)
    run_dir = runs / "r1"
    assert f"done: {run_dir}" in out
    # The same run on plain paths: the same book, byte for byte (but the holdings path it names).
    p_manifest, p_book, p_runs = _setup(plain)
    _run(capfd, p_manifest, p_book, p_runs)
    for name in ("flattened_min_variance.json", "flattened_equal_weight.json", "returns.parquet"):
        assert (run_dir / name).read_bytes() == (p_runs / "r1" / name).read_bytes(), name
    assert _rebalance(run_dir) == _rebalance(p_runs / "r1")
    assert json.loads((run_dir / "rebalance_min_variance.json").read_text())["current"]["path"] == str(book)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BRACED, "plain"]  # nothing written to a formatted path
    assert sorted(p.name for p in braced.iterdir()) == ["book {profile}.csv", "data", "manifest {profile}.json", "runs {profile}"]
    # A new book with an older mtime: the rebalance reruns (its content is tracked), the sleeves do not.
    stat = book.stat()
    _book(book, {"AAA": 1.0})
    os.utime(book, (stat.st_atime - 3600, stat.st_mtime - 3600))
    out = _run(capfd, manifest, book, runs)
    assert "rebalance min_variance done" in out and "sleeve" not in out, out
    rows = {r["symbol"]: r for r in json.loads((run_dir / "rebalance_min_variance.json").read_text())["rows"]}
    assert rows["AAA"]["current_weight"] == 1.0 and rows["CCC"]["current_weight"] == 0.0
    # And a no-op rerun runs nothing.
    assert "done (" not in _run(capfd, manifest, book, runs)
    # A previous run beside it, through the braced runs root.
    capfd.readouterr()
    argv = ["--profile", "meta_tables", "--manifest", str(manifest), "--previous-run", "r1", "--runs-root", str(runs),
            "--run-id", "r2", "--no-ray", "--quiet"]  # fmt: skip
    assert main(argv, prog=PROG, require_meta=True) == 0, capfd.readouterr().err
    assert json.loads((runs / "r2" / "rebalance_min_variance.json").read_text())["current"]["run_id"] == "r1"
    before = _tree(tmp_path)
    argv[argv.index("r2")] = "r3"
    assert main([*argv, "--dry-run"], prog=PROG, require_meta=True) == 0, capfd.readouterr().err
    assert _tree(tmp_path) == before


@pytest.mark.e2e
def test_the_plain_command_reads_a_braced_holdings_file_literally_and_reruns_on_its_content(tmp_path):
    """The reported case: Snakemake formatted ``{profile}`` in a holdings path as a wildcard."""
    manifest, book, _ = _setup(tmp_path)
    runs = tmp_path / "runs"
    config = {"profile": "meta_tables", "manifest": str(manifest), "runs_root": str(runs), "run_id": "r1",
              "holdings": str(book), "ray": "false"}  # fmt: skip
    proc = _plain(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((runs / "r1" / "rebalance_min_variance.json").read_text())
    assert record["current"]["path"] == str(book)
    assert {r["symbol"]: r["current_weight"] for r in record["rows"]}["CCC"] == 0.5
    # The rule cannot declare the book (its path reads as a wildcard); the ledger records it all the same.
    entries = [json.loads(line) for line in (runs / "r1" / "audit.jsonl").read_text().splitlines()]
    read = [{os.path.normpath(runs / "r1" / i["path"]) for i in e["inputs"]} for e in entries if e.get("stage") == "rebalance"]
    assert read and all(str(book) in r for r in read), read
    stat = book.stat()
    _book(book, {"AAA": 1.0})
    os.utime(book, (stat.st_atime - 3600, stat.st_mtime - 3600))
    proc = _plain(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((runs / "r1" / "rebalance_min_variance.json").read_text())
    assert {r["symbol"]: r["current_weight"] for r in record["rows"]}["CCC"] == 0.0


@pytest.mark.e2e
def test_a_braced_runs_root_the_plain_command_cannot_hold_is_refused_in_one_line(tmp_path):
    manifest, _, runs = _setup(tmp_path / BRACED)
    proc = _plain({"profile": "meta_tables", "manifest": str(manifest), "runs_root": str(runs), "run_id": "r1", "ray": "false"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"^error: runs_root .*would read part of it as a wildcard in the targets of rule all; run it with",
                     proc.stderr.strip().splitlines()[-1])  # fmt: skip
    assert not runs.exists()
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_tables"]["sleeves"][0]["run_id"] = "earlier"
    manifest.write_text(json.dumps(m))
    argv = ["--profile", "meta_tables", "--manifest", str(manifest), "--runs-root", str(runs), "--no-ray"]
    _one_line(_script(*argv), r"pinned sleeve 'a' is read from there before its directory exists")
    assert not runs.exists()


# ----------------------------------------------------------------------------- make


@pytest.mark.e2e
def test_make_passes_every_variable_as_one_literal_word(tmp_path):
    canary = tmp_path / "pwned"
    book = tmp_path / f"my book's; touch {canary}; $(shell touch {canary}) `touch {canary}`.csv"
    proc = subprocess.run(
        ["make", "--no-print-directory", "dag", "PROFILE=meta_small", f"MANIFEST={SMALL_MANIFEST}", f"HOLDINGS={book}",
         f"RUN_ID=r1; touch {canary}", "ARGS=--no-ray"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and not canary.exists(), proc.stderr
    # The script's one line (the run id, taken whole, is refused), then make's own "Error 2" line.
    assert lines[0].startswith(f"{PROG}: error: run id 'r1; touch {canary}' is not a safe name"), lines
    assert len(lines) == 2 and "Error 2" in lines[1], lines
    proc = subprocess.run(
        ["make", "--no-print-directory", "dag", "PROFILE=meta_small", f"MANIFEST={SMALL_MANIFEST}", f"HOLDINGS={book}",
         "ARGS=--no-ray"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and not canary.exists(), proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"{PROG}: error: ") and str(book) in proc.stderr.splitlines()[0]


# ----------------------------------------------------------------------------- the Python API


BAD_CALLS = [
    ("run_plan profile", lambda: tvs.run_plan(5), r"run_plan: profile=5 must be a string"),
    ("run_plan profiles", lambda: tvs.run_plan("meta_small", profiles=5), r"run_plan: profiles=5 must be"),
    ("run_plan manifest", lambda: tvs.run_plan("meta_small", manifest=3.0), r"run_plan: manifest=3.0 must be"),
    ("run_plan max_workers", lambda: tvs.run_plan("meta_small", max_workers=0), r"max_workers=0 must be a positive integer"),
    ("run_plan base_dir", lambda: tvs.run_plan("meta_small", base_dir=1), r"run_plan: base_dir=1 must be"),
    ("run_pipeline unknown", lambda: tvs.run_pipeline("meta_small", core=2), r"unknown option 'core'; the options are: "),
    ("run_pipeline profile", lambda: tvs.run_pipeline(["meta_small"]), r"run_pipeline: profile=\['meta_small'\] must be"),
    ("cores str", lambda: MetaPipeline("meta_small", cores="2"), r"cores='2' must be a positive integer \(got str\)"),
    ("ray str", lambda: MetaPipeline("meta_small", ray="no"), r"ray='no' must be True or False"),
    ("dry_run int", lambda: MetaPipeline("meta_small", dry_run=1), r"dry_run=1 must be True or False"),
    ("profiles list", lambda: MetaPipeline("meta_small", profiles=["hrp", 3]), r"profiles=\['hrp', 3\] must be"),
    ("runs_root int", lambda: MetaPipeline("meta_small", runs_root=3), r"runs_root=3 must be a path"),
    ("holdings int", lambda: MetaPipeline("meta_small", holdings=1), r"holdings=1 must be a path"),
    ("ray_num_cpus", lambda: MetaPipeline("meta_small", ray_num_cpus=1.5), r"ray_num_cpus=1.5 must be a positive integer"),
    ("progress", lambda: MetaPipeline("meta_small", progress="stdout"), r"progress='stdout' must be a text stream"),
    ("load_plan manifest", lambda: tvs.load_plan("meta_small", 7), r"load_plan: manifest_path=7 must be"),
    ("load_plan profiles str", lambda: tvs.load_plan("meta_small", SMALL_MANIFEST, "hrp"), r"risk_profiles='hrp' must be"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_the_api_refuses_a_wrong_type_with_its_own_error(call, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be created, even relative to the working directory
    with pytest.raises(ConfigError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_plan_result_views_name_a_bad_node_or_risk_profile():
    plan = tvs.load_plan("meta_small", SMALL_MANIFEST, ["hrp"])
    nodes = {path: NodeResult(path, spec, pd.DataFrame(), {"hrp": []}) for path, spec in plan.nodes.items()}
    result = PlanResult(plan, nodes)
    with pytest.raises(ConfigError, match=r"risk profile 'cvar' was not computed: use one of 'hrp'"):
        result.holdings("cvar")
    with pytest.raises(ConfigError, match=r"node 'sleeves/nope' is not in the plan: use one of '\.'"):
        result.metrics("sleeves/nope")
    atomic = next(p for p, s in plan.nodes.items() if not s.is_meta)
    with pytest.raises(ConfigError, match=r"is an atomic sleeve"):
        result.meta_weights("hrp", node=atomic)
