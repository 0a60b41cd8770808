"""Every dependency is a rule input or a rerun trigger: external files by content, package code by what it runs (real runs).

The runs execute from a copy of the project (package, workflow, scripts) in a temp dir, so
the test can edit the package's source like a developer would; ``PYTHONPATH`` makes that
copy the one imported. Which jobs ran is read from the audit ledger: one stage entry per job.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import codehash, deps

from .helpers import (
    WINDOWS,
    copy_project,
    file_bytes,
    last_seq,
    run_script,
    stages_since,
    table_manifest,
    write_table_data,
)

META_CHAIN = [
    ("flatten", "."),
    ("flatten", "."),
    ("meta_optimize", "."),
    ("meta_optimize", "."),
    ("meta_returns", "."),
    ("node_returns", "."),
    ("report", "."),
    ("risk", "."),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("triggers")
    data = root / "data"
    write_table_data(data)
    (root / "manifest.json").write_text(json.dumps(table_manifest(data)))
    repo = copy_project(root / "repo")
    return repo, data


def _run(repo: Path, profile: str = "meta_tables", run_id: str = "r", *args: str) -> None:
    proc = run_script(repo, "--profile", profile, "--manifest", "../manifest.json", "--run-id", run_id, "--no-ray", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("done:"), proc.stdout


def _stamps(run_dir: Path, sleeve: str) -> dict[str, tuple[bytes, int]]:
    d = run_dir / "sleeves" / sleeve
    return {rel: (data, (d / rel).stat().st_mtime_ns) for rel, data in file_bytes(d).items()}


def _edit_price(path: Path, line: int = 5) -> None:
    """Change one close price of a CSV file (the last digit of its last column)."""
    lines = path.read_text().splitlines()
    head, _, last = lines[line - 1].rpartition(",")
    lines[line - 1] = f"{head},{float(last) * 1.01:.6f}"
    path.write_text("\n".join(lines) + "\n")


def _edit_module(repo: Path, module: str) -> None:
    """A real code change to ``module`` of the copied package: one more statement run at import time."""
    pkg = repo / "tradingview_scraper"
    path = pkg / f"{module}.py" if (pkg / f"{module}.py").is_file() else pkg / module / "__init__.py"
    path.write_text(path.read_text() + "\nNone  # rerun probe\n")


def _edit_function(path: Path, name: str) -> None:
    """A real code change inside top-level definition ``name`` of ``path``: a statement at the start of its body."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if getattr(n, "name", None) == name)
    doc = ast.get_docstring(node) is not None
    first = node.body[1] if doc and len(node.body) > 1 else node.body[0]
    lines = path.read_text().splitlines(keepends=True)
    at = first.lineno - 1 if not (doc and len(node.body) == 1) else first.end_lineno
    indent = " " * (first.col_offset if first.lineno - 1 == at else node.body[0].col_offset)
    lines.insert(at, f"{indent}_rerun_probe = 0\n")
    path.write_text("".join(lines))


@pytest.mark.e2e
def test_the_copy_is_what_runs(project):
    repo, _ = project
    out = subprocess.run(
        [sys.executable, "-c", "import tradingview_scraper; print(tradingview_scraper.__file__)"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert Path(out.strip()).is_relative_to(repo)


@pytest.mark.e2e
def test_price_files_and_code_are_rerun_triggers(project):
    repo, data = project
    run_dir = repo / "data" / "runs" / "r"
    _run(repo)
    assert len(stages_since(run_dir, 0)) == 3 + len(META_CHAIN) + 1  # + resolved manifest

    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == [], "a no-op rerun ran jobs"

    os.utime(data / "b.csv")  # newer, same bytes: Snakemake's checksum says unchanged
    _run(repo)
    assert stages_since(run_dir, seq) == []

    # One table sleeve's prices change: that sleeve and everything downstream, nothing else.
    before_b, before_c = _stamps(run_dir, "b"), _stamps(run_dir, "c")
    _edit_price(data / "a.csv")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", "sleeves/a"), *META_CHAIN])
    assert _stamps(run_dir, "b") == before_b and _stamps(run_dir, "c") == before_c, "untouched sleeves kept bytes and mtimes"

    # One TradingView export of sleeve c changes.
    before_a = _stamps(run_dir, "a")
    _edit_price(data / "tv" / "X_TWO, 1D.csv", line=9)
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", "sleeves/c"), *META_CHAIN])
    assert _stamps(run_dir, "a") == before_a and _stamps(run_dir, "b") == before_b

    # Report code changes: only the report reruns.
    kept = {k: v for k, v in file_bytes(run_dir).items() if not k.startswith("report")}
    _edit_function(repo / "tradingview_scraper" / "report" / "_build.py", "build_report")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == [("report", ".")]
    assert {k: v for k, v in file_bytes(run_dir).items() if not k.startswith("report")} == kept

    # The stages module of the meta steps and the resolved manifest changes: those rerun (and the
    # meta layer after them), not the sleeves.
    _edit_module(repo, "stages/_meta")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([*META_CHAIN, ("resolved_manifest", ".")])

    # Walk-forward code changes: every sleeve and the meta layer (which runs it too), not the manifest.
    _edit_module(repo, "backtest")
    seq = last_seq(run_dir)
    _run(repo)
    assert stages_since(run_dir, seq) == sorted([("sleeve", f"sleeves/{s}") for s in "abc"] + META_CHAIN)

    proc = run_script(repo, "--profile", "meta_tables", "--manifest", "../manifest.json", "--run-id", "r", "--dry-run")
    assert "dry run: 0 jobs" in proc.stdout, proc.stdout


def test_code_is_what_the_stage_function_reaches():
    from tradingview_scraper import steps

    sleeve = steps.reached("sleeve")
    assert {"sleeve.py", "backtest.py", "engines.py", "data/_prices.py", "stages/_sleeves.py", "stages/_step.py"} <= set(sleeve)
    assert not any(rel.startswith(("orchestration/", "cluster/", "report/", "stages/_meta")) for rel in sleeve)
    assert "sleeve" in sleeve["stages/_sleeves.py"] and "check_data" not in sleeve["stages/_sleeves.py"]
    report = steps.reached("report")
    assert "backtest.py" not in report and any(rel.startswith("report/") for rel in report)
    # Steps of one module count apart: the meta steps and the resolved manifest share stages/_meta.py.
    meta_returns, manifest = steps.reached("meta_returns")["stages/_meta.py"], steps.reached("resolved_manifest")["stages/_meta.py"]
    assert "resolved_manifest" not in meta_returns and "meta_returns" in meta_returns and "meta_returns" not in manifest
    # meta_optimize runs the health gate of health.py (the hand-kept list of old left it out).
    assert "health_gate" in steps.reached("meta_optimize")["health.py"]
    hashes = {name: steps.code(name) for name in ("sleeve", "meta_optimize", "report", "resolved_manifest")}
    assert len(set(hashes.values())) == 4 and all(h.startswith(name + "@") for name, h in hashes.items())


def test_library_versions_are_those_the_reached_code_imports_and_their_requirements():
    from tradingview_scraper import stages, steps

    libs = codehash.libraries(codehash.reach(steps.step("sleeve").load()).external)
    assert {"numpy", "pandas", "skfolio", "scikit-learn", "clarabel"} <= set(libs)  # clarabel: skfolio's solver, required
    assert "ray" not in libs and "matplotlib" not in libs  # Ray places tasks; plots are the report's
    resolved = codehash.reach(steps.step("resolved_manifest").load(), stages.run_step)
    assert "skfolio" not in codehash.libraries(resolved.external)
    assert "cvxpy-base" in codehash.libraries(["cvxpy"])  # an import name that is not its distribution's


def test_content_digest_takes_a_recorded_sha256_only_for_the_same_stat(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("date,A\n2020-01-01,1.5\n")
    real = deps.file_digest(f)
    assert deps.file_digest(f, {str(f): (deps.stat_key(f), "recorded")}) == "recorded"
    before, st = deps.stat_key(f), f.stat()
    f.write_text("date,A\n2020-01-01,1.6\n")  # same size, then the old mtime put back
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert deps.stat_key(f) != before and deps.file_digest(f, {str(f): (before, real)}) != real
    assert deps.content_digest([f]) != deps.content_digest([f], {str(f): (deps.stat_key(f), real)})
    assert deps.content_digest([tmp_path / "missing.csv"]).startswith("sha256:")


def test_a_file_is_hashed_once_per_version_while_its_digests_are_kept(tmp_path, monkeypatch):
    """The workflow keeps one ``known`` per parse (``Wiring``): a price file many sleeves share is hashed
    once, and a file rewritten during the parse (same size, old mtime put back) is hashed again."""
    f = tmp_path / "p.csv"
    f.write_text("date,A\n2020-01-01,1.5\n")
    known: dict = {}
    first = deps.content_digest([f], known)
    assert known == {str(f): (deps.stat_key(f), deps.file_sha256(f))}
    hashed: list = []
    sha256 = deps.file_sha256
    monkeypatch.setattr(deps, "file_sha256", lambda path: hashed.append(path) or sha256(path))
    assert deps.content_digest([f], known) == first and deps.content_digest([f, f], known) and hashed == []
    st = f.stat()
    f.write_text("date,A\n2020-01-01,1.6\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert deps.content_digest([f], known) != first and hashed == [f]


def test_price_files_lists_exactly_what_a_sleeve_reads(tmp_path):
    write_table_data(tmp_path)
    m = table_manifest(tmp_path)
    assert deps.price_files(m["profiles"]["ta"]["data"], ["AAA"]) == [tmp_path / "a.csv"]
    tv = m["profiles"]["tv"]["data"]
    assert deps.price_files(tv, ["TWO"]) == [tmp_path / "tv" / "X_TWO, 1D.csv"]
    assert deps.price_files(tv, None) == [tmp_path / "tv" / "X_ONE, 1D.csv", tmp_path / "tv" / "X_TWO, 1D.csv"]
    assert deps.price_files({"source": "skfolio"}, None) == []
    assert deps.price_files({"source": "table", "path": str(tmp_path / "missing.csv")}, None) == []
    assert deps.dataset_pin({"source": "skfolio", "dataset": "factors"}).startswith("skfolio 1.")
    assert deps.dataset_pin(tv) is None


# ----------------------------------------------------------------------------- content decides, whatever the mtime

BOOK_CHAIN = sorted([*META_CHAIN, ("rebalance", "."), ("rebalance", ".")])


@pytest.fixture(scope="module")
def book_project(tmp_path_factory):
    """A meta run ``r`` of two computed sleeves (a table, TradingView exports), a sleeve pinned to run
    ``src``, an external sleeve and a holdings file; ``src`` was computed twice (``src_v1`` keeps its first state, mtimes kept)."""
    root = tmp_path_factory.mktemp("content")
    data = root / "data"
    write_table_data(data)
    m = table_manifest(data)
    # An external sleeve (issue 22): its returns on the tables' weekdays, fixed decimals, and its book.
    dates = pd.bdate_range("2020-01-01", periods=200)
    returns = np.random.default_rng(7).normal(0.0, 0.01, len(dates))
    (data / "e.csv").write_text("date,return\n" + "".join(f"{d.date()},{r:.8f}\n" for d, r in zip(dates, returns, strict=True)))
    (data / "e_book.csv").write_text("symbol,direction,weight\nEEE,LONG,0.6\nFFF,SHORT,0.4\n")
    external = {"returns": str(data / "e.csv"), "holdings": str(data / "e_book.csv")}
    m["profiles"]["meta_book"] = {
        "sleeves": [{"id": "a", "profile": "ta"}, {"id": "c", "profile": "tv"}, {"id": "b", "profile": "tb", "run_id": "src"},
                    {"id": "e", "external": external}],
        "backtest": dict(WINDOWS),
        "profiles": ["equal_weight", "min_variance"],
    }
    (root / "manifest.json").write_text(json.dumps(m))
    (root / "holdings_new.csv").write_text("symbol,direction,weight\nAAA,LONG,0.3\nDDD,LONG,0.7\n")  # the older file
    (root / "holdings.csv").write_text("symbol,direction,weight\nAAA,LONG,0.5\nCCC,LONG,0.5\n")
    repo = copy_project(root / "repo")
    _run(repo, "meta_tables", "src")
    shutil.copytree(repo / "data" / "runs" / "src", root / "src_v1")  # copy2: the mtimes stay
    _edit_price(data / "b.csv")
    _run(repo, "meta_tables", "src")
    _run(repo, "meta_book", "r", "--holdings", "../holdings.csv")
    return root, repo, data


def _same_size_edit(path: Path, line: int, column: int = -1) -> None:
    """Change one digit of one price, same size, then put the file's old mtime back (``touch -r``)."""
    st = path.stat()
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cell = cells[column]
    cells[column] = cell[:-1] + str((int(cell[-1]) + 1) % 10)
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def _rerun(repo: Path, *book: str) -> list[tuple[str, str]]:
    run_dir = repo / "data" / "runs" / "r"
    seq = last_seq(run_dir)
    _run(repo, "meta_book", "r", *(book or ("--holdings", "../holdings.csv")))
    return stages_since(run_dir, seq)


@pytest.mark.e2e
def test_content_not_mtime_decides_what_reruns(book_project):
    root, repo, data = book_project
    runs = repo / "data" / "runs"
    # An earlier run to serve as the book at the end (other sleeve bounds), parked aside.
    m = json.loads((root / "manifest.json").read_text())
    m["profiles"]["meta_tables"]["meta_allocation"] = {"min_weight": 0.3, "max_weight": 0.4}
    (root / "manifest_old.json").write_text(json.dumps(m))
    # Independent runs (other run ids, other files) go side by side, here and below.
    with ThreadPoolExecutor(2) as pool:
        prev = pool.submit(run_script, repo, "--profile", "meta_tables", "--manifest", "../manifest_old.json",
                           "--run-id", "prev", "--no-ray")  # fmt: skip
        noop = pool.submit(_rerun, repo)
        assert prev.result().returncode == 0, prev.result().stderr
        assert noop.result() == [], "a no-op rerun ran jobs"
    os.replace(runs / "prev", root / "prev_parked")

    # A table and a TradingView export each get a same-size one-digit edit, old mtimes put back.
    _same_size_edit(data / "a.csv", 7)
    _same_size_edit(data / "tv" / "X_ONE, 1D.csv", 9, column=4)
    assert _rerun(repo) == sorted([("sleeve", "sleeves/a"), ("sleeve", "sleeves/c"), *BOOK_CHAIN])

    # The external sleeve's returns and book, same-size edits with old mtimes (issue 22): it and what follows.
    _same_size_edit(data / "e.csv", 12)
    book, st = data / "e_book.csv", (data / "e_book.csv").stat()
    book.write_text(book.read_text().replace("0.6", "0.5").replace("0.4", "0.5"))
    os.utime(book, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _rerun(repo) == sorted([("external_sleeve", "sleeves/e"), *BOOK_CHAIN])

    # The holdings file is replaced by an older one (mv): the rebalance and the report.
    os.replace(root / "holdings_new.csv", root / "holdings.csv")
    assert _rerun(repo) == [("rebalance", "."), ("rebalance", "."), ("report", ".")]

    # The pinned sleeve's price file, read by the risk job only (the pin copies its run's artifacts).
    _same_size_edit(data / "b.csv", 11)
    assert _rerun(repo) == [("report", "."), ("risk", ".")]

    # The pinned run is put back to its first state (an older copy, mtimes kept; its ledger verifies).
    shutil.rmtree(repo / "data" / "runs" / "src")
    os.replace(root / "src_v1", repo / "data" / "runs" / "src")
    assert _rerun(repo) == sorted([("pinned_sleeve", "sleeves/b"), *BOOK_CHAIN])
    assert _rerun(repo) == []

    # The result is a fresh run's, byte for byte (where a sleeve ran and for how long aside).
    run_dir = repo / "data" / "runs" / "r"
    run_dir.rename(run_dir.with_name("r_incremental"))
    with ThreadPoolExecutor(2) as pool:  # the book of the next step, run 'prev', beside the fresh run
        fresh_run = pool.submit(_run, repo, "meta_book", "r", "--holdings", "../holdings.csv")
        prev_run = pool.submit(_run, repo, "meta_tables", "prev")
        for run in (fresh_run, prev_run):
            run.result()
    incremental, fresh = file_bytes(run_dir.with_name("r_incremental")), file_bytes(run_dir)
    assert incremental.keys() == fresh.keys()
    differ = sorted(k for k in fresh if incremental[k] != fresh[k])
    assert all(k.endswith("provenance.json") for k in differ), differ
    for k in differ:
        placement = {"tasks", "mode", "address"}
        a, b = (json.loads(x[k]) for x in (incremental, fresh))
        assert {f: v for f, v in a.items() if f not in placement} == {f: v for f, v in b.items() if f not in placement}, k

    # The book is a previous run; that run is then replaced (mv) by its older, parked state: each
    # rebalance whose book file's bytes differ reruns, with the report.
    assert _rerun(repo, "--previous-run", "prev") == [("rebalance", "."), ("rebalance", "."), ("report", ".")]
    newer = file_bytes(runs / "prev")
    shutil.rmtree(runs / "prev")
    os.replace(root / "prev_parked", runs / "prev")
    older = file_bytes(runs / "prev")
    changed = [p for p in ("equal_weight", "min_variance") if newer[f"flattened_{p}.json"] != older[f"flattened_{p}.json"]]
    assert "min_variance" in changed
    if newer["returns.parquet"] != older["returns.parquet"]:  # its last date: where every book drifts from
        changed = ["equal_weight", "min_variance"]
    assert _rerun(repo, "--previous-run", "prev") == [("rebalance", ".")] * len(changed) + [("report", ".")]
    assert _rerun(repo, "--previous-run", "prev") == []
    # Back to the fixture's book, the holdings file, for the next test sharing the project.
    assert _rerun(repo) == [("rebalance", "."), ("rebalance", "."), ("report", ".")]


# ----------------------------------------------------------------------------- code: derived, exact

#: Run in the copied project: for each package module a rule reaches, a real edit of it (one
#: more statement run at import time), a dry run, the original back; then an edit of each
#: rule's own stage function; then comments, docstrings and formatting of every reached
#: module changed at once. Prints the rules with jobs after each.
_PROBE = r'''
import ast, json, re, sys
from pathlib import Path
from tradingview_scraper import codehash, steps
from tradingview_scraper.orchestration.pipeline import MetaPipeline

kwargs = json.loads(sys.argv[1])
pkg = Path(codehash.PACKAGE_DIR)
rules = {}
for smk in sorted(Path("workflow/rules").glob("*.smk")):
    for name, body in re.findall(r"\nrule (\w+):(.*?)(?=\nrule |\nuse rule |\Z)", "\n" + smk.read_text(), re.S):
        rules[name] = re.search(r"get_params\(\"(\w+)\"\)", body)[1]


def dry():
    jobs = MetaPipeline(**kwargs, dry_run=True).execute().jobs
    return sorted({j.rule for j in jobs} - {"all"})


def docstring(node):
    body = getattr(node, "body", None)
    if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        return body[0]


def edit_function(path, name):
    text = path.read_text()
    node = next(n for n in ast.parse(text).body if getattr(n, "name", None) == name)
    doc = docstring(node)
    first = node.body[0]
    at = doc.end_lineno if doc is not None else first.lineno - 1
    lines = text.splitlines(keepends=True)
    lines.insert(at, " " * first.col_offset + "_rerun_probe = 0\n")
    path.write_text("".join(lines))


def cosmetic(path):
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    for node in ast.walk(ast.parse(text)):
        doc = docstring(node)
        if doc is not None:
            line = lines[doc.lineno - 1]
            quotes = [k for k in (line.find(chr(34) * 3, doc.col_offset), line.find(chr(39) * 3, doc.col_offset)) if k >= 0]
            if quotes:
                lines[doc.lineno - 1] = line[: min(quotes) + 3] + "Probe: " + line[min(quotes) + 3 :]
    path.write_text("# a comment the probe adds\n" + "".join(lines) + "\n\n# and one at the end\n")


reach = {}
for rule, step in rules.items():
    for rel in steps.reached(step):
        reach.setdefault(rel, []).append(rule)
out = {"rules": rules, "reach": reach, "baseline": dry(), "modules": {}, "functions": {}}
# The rules with jobs in this run (orders need trading settings, which this run has none of).
out["present"] = sorted({j.rule for j in MetaPipeline(**kwargs, dry_run=True, forceall=True).execute().jobs} - {"all"})
for rel in sorted(reach):
    path = pkg / rel
    original = path.read_text()
    path.write_text(original + "\nNone  # rerun probe\n")
    try:
        out["modules"][rel] = dry()
    finally:
        path.write_text(original)
for rule, step in rules.items():
    function = steps.step(step).load()
    path = Path(sys.modules[function.__module__].__file__)
    original = path.read_text()
    edit_function(path, function.__name__)
    try:
        out["functions"][rule] = dry()
    finally:
        path.write_text(original)
originals = {rel: (pkg / rel).read_text() for rel in reach}
try:
    for rel in reach:
        cosmetic(pkg / rel)
    out["cosmetic"] = dry()
finally:
    for rel, text in originals.items():
        (pkg / rel).write_text(text)
out["after"] = dry()
print(json.dumps(out))
'''


@pytest.mark.e2e
def test_each_module_a_rule_reaches_reruns_it_and_comments_rerun_nothing(book_project):
    _, repo, _ = book_project
    kwargs = {"meta_profile": "meta_book", "manifest": "../manifest.json", "run_id": "r", "ray": False, "holdings": "../holdings.csv"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(kwargs)],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["baseline"] == [] and out["after"] == [], out["baseline"]
    assert set(out["rules"]) >= {"sleeve", "pinned_sleeve", "meta_returns", "meta_optimize", "node_returns", "flatten",
                                 "risk", "report", "rebalance", "resolved_manifest"}  # fmt: skip
    assert len(out["modules"]) >= 30, sorted(out["modules"])
    present = set(out["present"])
    assert present >= set(out["rules"]) - {"orders"}, out["present"]
    for rel, rules in out["reach"].items():
        missing = set(rules) & present - set(out["modules"][rel])
        assert not missing, f"editing {rel} did not rerun {sorted(missing)}"
    # A module no computing rule reaches reruns nothing: the report's modules rerun only the report.
    assert out["modules"]["report/_figures.py"] == ["report"]
    for rule, jobs in out["functions"].items():
        assert rule in jobs or rule not in present, (rule, jobs)
    assert out["functions"]["report"] == ["report"]
    assert out["functions"]["resolved_manifest"] == ["resolved_manifest"]
    assert out["functions"]["rebalance"] == ["rebalance", "report"]
    assert out["functions"]["risk"] == ["report", "risk"]
    assert out["cosmetic"] == [], "comments, docstrings and formatting reran jobs"
