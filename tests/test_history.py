"""Run history and the ``tvs`` command: listing runs, ``--previous-run latest``, pruning, one-line errors."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tradingview_scraper import history
from tradingview_scraper.errors import ConfigError
from tradingview_scraper.orchestration import tvs
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.run import RunContext

from .conftest import SMALL_MANIFEST
from .helpers import prices, table_manifest


def _tvs(capsys, *argv) -> tuple[int, str, str]:
    code = tvs.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


# --------------------------------------------------------------------------- cheap: no run


def test_tvs_is_a_console_script_of_the_package():
    (ep,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "tvs"]
    assert ep.value == "tradingview_scraper.orchestration.tvs:main"
    assert ep.load() is tvs.main


def test_the_installed_command_runs(tmp_path):
    tvs_bin = Path(sys.executable).parent / "tvs"
    done = subprocess.run([tvs_bin, "runs", "--runs-root", tmp_path], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"no runs in {tmp_path}\n", "")
    done = subprocess.run([tvs_bin], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("usage: tvs COMMAND")


def test_a_fresh_checkout_has_no_runs_yet(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default runs root, data/runs, appears with the first run
    assert _tvs(capsys, "runs") == (0, "no runs in data/runs\n", "")
    code, out, err = _tvs(capsys, "prune", "--keep", "2")
    assert (code, err) == (0, "") and "nothing to prune" in out
    assert not (tmp_path / "data").exists()


def test_usage_errors_are_one_line_with_exit_2(capsys, tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    cases = [
        (("nonsense",), ("unknown command 'nonsense'", "run, dag, verify, runs, prune")),
        (("run",), ("give the profile first",)),
        (("run", "no_such_profile", "--manifest", SMALL_MANIFEST, "--runs-root", tmp_path, "--dry-run"), ("no_such_profile",)),
        (("runs", "--runs-root", tmp_path / "missing"), ("is not a directory",)),
        (("runs", "--profile", "meta_small", "--runs-root", tmp_path), ("no run of profile 'meta_small'", "holds no run")),
        (("verify", "junk", "--runs-root", tmp_path), ("is not a run", "no audit ledger")),
        (("prune", "--keep", "0", "--runs-root", tmp_path), ("--keep 0 must be a positive integer",)),
    ]
    for argv, words in cases:
        code, out, err = _tvs(capsys, *argv)
        assert code == 2, (argv, out, err)
        _one_line_error(err, *words)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_previous_run_latest_is_the_runners_word(tmp_path):
    # The plain snakemake command cannot resolve it (each job would pick its own run).
    with pytest.raises(ConfigError, match="previous_run=latest is resolved by the runner"):
        RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "previous_run": "latest", "ray": False})
    with pytest.raises(ConfigError, match="run id 'latest' is reserved"):
        MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="latest", runs_root=tmp_path, ray=False, dry_run=True)
    with pytest.raises(ConfigError, match="no finished run of profile 'meta_small'.*there is none"):
        MetaPipeline("meta_small", manifest=SMALL_MANIFEST, runs_root=tmp_path, ray=False, dry_run=True, previous_run="latest")


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def hist(pm_runs, tmp_path_factory):
    """A runs root of real runs, oldest first: ``prev`` and ``now`` (meta_small, ``now``'s previous
    run is ``prev``: copies of the shared runs), standalone ``tech`` runs ``t-old``, ``tech-old``
    and ``t-new``, ``p1`` (meta_pinned: pins ``tech-old``), ``n3`` (meta_small, ``--previous-run
    latest``), and ``junk``, a folder that is not a run."""
    root = tmp_path_factory.mktemp("hist") / "runs"
    root.mkdir()
    for rid in ("prev", "now"):
        shutil.copytree(pm_runs[rid], root / rid)
    common = ["--manifest", str(SMALL_MANIFEST), "--runs-root", str(root), "--no-ray", "--quiet"]
    for profile, rid, extra in [
        ("tech", "t-old", []),
        ("tech", "tech-old", []),
        ("tech", "t-new", []),
        ("meta_pinned", "p1", []),
        ("meta_small", "n3", ["--previous-run", "latest"]),
    ]:
        assert tvs.main(["run", profile, "--run-id", rid, *common, *extra]) == 0, rid
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("mine")
    return root


def _headline(report_md: str) -> tuple[str, dict[str, str]]:
    """The period end and each profile's Sharpe as the report's headline table prints them."""
    section = report_md.split("## Headline", 1)[1].split("## ", 1)[0]
    sharpe, end = {}, None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 10 and re.match(r"^-?\d", cells[3]):
            sharpe[cells[0]] = cells[3]
            end = cells[8].split("..")[1].strip()
    return end, sharpe


@pytest.mark.e2e
def test_tvs_runs_reads_status_data_end_and_sharpe_from_the_runs(hist, capsys):
    code, out, err = _tvs(capsys, "runs", "--json", "--runs-root", hist)
    assert code == 0, err
    listed = {r["run_id"]: r for r in json.loads(out)}
    assert list(listed) == ["prev", "now", "t-old", "tech-old", "t-new", "p1", "n3"]  # by start
    assert {r["status"] for r in listed.values()} == {"finished"}
    assert listed["p1"]["pins"] == ["tech-old"] and listed["n3"]["previous_run"] == ["now"]
    assert listed["now"]["previous_run"] == ["prev"]
    for rid in ("prev", "now", "p1", "n3"):
        end, sharpe = _headline((hist / rid / "report.md").read_text())
        r = listed[rid]
        assert r["data_end"] == end
        assert list(r["sharpe"]) == list(sharpe)  # the run's order of risk profiles
        assert {p: f"{s:.2f}" for p, s in r["sharpe"].items()} == sharpe
    assert listed["prev"]["data_end"] < listed["now"]["data_end"] == listed["n3"]["data_end"]
    assert listed["t-new"]["sharpe"] == {} and listed["t-new"]["profile"] == "tech"
    code, out, _ = _tvs(capsys, "runs", "--profile", "tech", "--runs-root", hist)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["run", "id", "profile", "data"]
    assert [ln.split()[0] for ln in lines[1:]] == ["t-old", "tech-old", "t-new"]


@pytest.mark.e2e
def test_previous_run_latest_names_the_newest_finished_run_of_the_profile(hist):
    ledger = [json.loads(line) for line in (hist / "n3" / "audit.jsonl").read_text().splitlines()]
    assert {e["params"]["previous_run"] for e in ledger if e.get("stage") == "rebalance"} == {"now"}
    assert history.latest("meta_small", hist) == "n3"
    assert history.latest("meta_small", hist, exclude="n3") == "now"
    assert history.latest("tech", hist) == "t-new"
    with pytest.raises(ConfigError, match="no finished run of profile 'meta_two'"):
        history.latest("meta_two", hist)


def _hold_lock(run_dir):
    """Another process holding ``run_dir``'s run lock (a run in progress), until its stdin closes."""
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir / ".run.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.e2e
def test_prune_keeps_the_newest_pinned_previous_and_running_runs(hist, capsys, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(hist, root)
    before = sorted(p.name for p in root.iterdir())
    locker = _hold_lock(root / "t-old")
    try:
        assert history.latest("tech", root) == "t-new"
        code, out, err = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root)  # a dry run by default
        assert code == 0, err
        assert sorted(p.name for p in root.iterdir()) == before
        assert "keep    n3  (one of the 1 newest runs of meta_small)" in out
        assert "keep    now  (previous run of n3)" in out
        assert "keep    tech-old  (pinned by p1)" in out
        assert re.search(r"keep    t-old  \(running \(pid \d+ holds its lock\)\)", out)
        assert "leave   junk  (not a run: no audit ledger (audit.jsonl))" in out
        # prev is now's previous run, but now is kept only as n3's: a daily chain does not keep its history.
        assert re.findall(r"^would delete (\S+)", out, re.M) == ["prev"]
        code, out, err = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root, "--delete")
        assert code == 0 and re.findall(r"^deleted (\S+)", out, re.M) == ["prev"], out + err
    finally:
        locker.stdin.close()
        locker.wait(30)
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--profile", "tech", "--runs-root", root, "--delete")
    assert code == 0 and re.findall(r"^deleted (\S+)", out, re.M) == ["t-old"], out
    assert sorted(p.name for p in root.iterdir()) == sorted(set(before) - {"prev", "t-old"})
    assert (root / "junk" / "notes.txt").read_text() == "mine"
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root)
    assert code == 0 and out.splitlines()[-1] == f"nothing to prune: every run in {root} is kept"
    for rid in ("n3", "p1", "now"):  # what stays still verifies
        code, out, err = _tvs(capsys, "verify", rid, "--runs-root", root)
        assert code == 0 and out.startswith("audit OK"), (rid, out, err)
    code, _, err = _tvs(capsys, "runs", "--profile", "meta_two", "--runs-root", root)
    assert code == 2
    _one_line_error(err, "no run of profile 'meta_two'", "meta_pinned, meta_small, tech")
    # With no run pinning it any more, the manifest's pin keeps tech-old (the shipped manifest does not pin it).
    shutil.rmtree(root / "p1")
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--profile", "tech", "--runs-root", root, "--manifest", SMALL_MANIFEST)
    assert code == 0 and f"keep    tech-old  (pinned in manifest {SMALL_MANIFEST})" in out, out
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--profile", "tech", "--runs-root", root)
    assert code == 0 and re.findall(r"^would delete (\S+)", out, re.M) == ["tech-old"], out
    code, _, err = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root, "--manifest", root / "none.json")
    assert code == 2
    _one_line_error(err, "none.json", "not found")


@pytest.mark.e2e
def test_a_failed_run_is_listed_as_failed_and_is_never_latest(tmp_path, capsys):
    frame = prices(["AAA", "BBB"], n=120)
    frame.iloc[90, 0] = -1.0  # refused in the sleeve job, once the prices load
    frame.to_csv(tmp_path / "a.csv")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(table_manifest(tmp_path, tradingview=False)))
    root = tmp_path / "runs"
    argv = ["run", "ta", "--run-id", "f1", "--manifest", manifest, "--runs-root", root, "--no-ray", "--quiet"]
    code, _, err = _tvs(capsys, *argv)
    assert code == 1, err
    code, out, _ = _tvs(capsys, "runs", "--json", "--runs-root", root)
    (run,) = json.loads(out)
    assert (run["run_id"], run["profile"], run["status"]) == ("f1", "ta", "failed")
    assert err.startswith("tvs run: error: ") and err.removeprefix("tvs run: error: ").strip() in run["detail"]
    with pytest.raises(ConfigError, match=r"no finished run of profile 'ta' .*f1 \(failed\)"):
        history.latest("ta", root)
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root, "--delete")
    assert code == 0 and out.splitlines()[-1].startswith("nothing to prune") and (root / "f1").is_dir()
    # A finished run, then a failed one: the newest run is the failed one, the finished one stays too.
    frame.iloc[90, 0] = 100.0
    frame.to_csv(tmp_path / "a.csv")
    assert tvs.main([str(a) for a in argv[:3]] + ["f0", *map(str, argv[4:])]) == 0
    frame.iloc[90, 0] = -1.0
    frame.to_csv(tmp_path / "a.csv")
    assert tvs.main([str(a) for a in argv[:3]] + ["f2", *map(str, argv[4:])]) == 1
    capsys.readouterr()
    assert history.latest("ta", root) == "f0"
    code, out, _ = _tvs(capsys, "prune", "--keep", "1", "--runs-root", root)
    assert "keep    f2  (one of the 1 newest runs of ta)" in out
    assert "keep    f0  (the newest finished run of ta (--previous-run latest))" in out
    assert re.findall(r"^would delete (\S+)", out, re.M) == ["f1"], out
