"""Cross-run node reuse (issue 25): a new run takes unchanged jobs' outputs from earlier runs, verified by hash.

One sequence of real in-process runs of ``meta_small`` (one risk profile) in one runs root,
shared by the tests below: ``a`` computes everything; ``b`` changes nothing; ``c`` edits one
sleeve's parameter; before ``d`` (the original manifest again) the run holding the original
``tech`` sleeve is deleted and one of ``staples``'s files in the run the store names is edited
in place with its mtime kept; ``e`` runs with reuse off.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import pytest

from tradingview_scraper import audit, steps
from tradingview_scraper.orchestration.cli import build_parser
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import SMALL_MANIFEST

PROFILES = "min_variance"
SLEEVES = ("sleeves/tech", "sleeves/staples", "sleeves/factors")


def _stages(run_dir: Path) -> list[dict]:
    entries = (json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines())
    return [e for e in entries if e["kind"] == "stage" and e["outcome"] == "success"]


def _reused(run_dir: Path) -> dict[tuple[str, str], str]:
    """(stage, node) -> the run it was reused from, for every reused job of the run (a job per profile counted once)."""
    return {(e["stage"], e["node"]): e["params"]["reused"]["run"] for e in _stages(run_dir) if "reused" in e["params"]}


def _computed(run_dir: Path) -> set[tuple[str, str]]:
    return {(e["stage"], e["node"]) for e in _stages(run_dir) if "reused" not in e["params"]}


def _files(run_dir: Path, node: str) -> dict[str, bytes]:
    base = run_dir / node
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.iterdir()) if p.is_file() and p.suffix != ".log"}


def _store_runs(root: Path, node: str) -> set[str]:
    """The runs the node store names for the sleeve at ``node`` (one entry per key)."""
    entries = (json.loads(p.read_text()) for p in (root / ".store" / "nodes").glob("*.json"))
    return {e["run"] for e in entries if e["step"] == "sleeve" and e["node"] == node}


@pytest.fixture(scope="module")
def reuse_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("reuse")
    root = base / "runs"
    edited = json.loads(SMALL_MANIFEST.read_text())
    edited["profiles"]["tech"]["backtest"] = {"commission": 0.001}
    edited_path = base / "manifest_edited.json"
    edited_path.write_text(json.dumps(edited))

    def run(run_id, manifest=SMALL_MANIFEST, **kw):
        MetaPipeline("meta_small", manifest=manifest, profiles=PROFILES, run_id=run_id, runs_root=root, ray=False, **kw).execute()
        return root / run_id

    out = {"root": root, "a": run("a")}
    out["a_files"] = {n: _files(out["a"], n) for n in (*SLEEVES, "meta")}
    out["b"] = run("b")
    shutil.rmtree(out["a"])  # b's copies outlive the run they came from
    out["b_verify"] = audit.verify(out["b"])
    out["c"] = run("c", manifest=edited_path)
    # an entry names the newest run holding its files: the original tech sleeve's b, the edited one's c,
    # staples' c (reused there)
    out["store"] = {n: _store_runs(root, n) for n in SLEEVES}
    b = out["b"]  # what the tests read of b before it goes
    out["b_seen"] = {"reused": _reused(b), "computed": _computed(b), "stages": _stages(b), "files": {n: _files(b, n) for n in (*SLEEVES, "meta")}}
    shutil.rmtree(root / "b")
    victim = root / "c" / "sleeves/staples/health.json"
    st = victim.stat()
    with open(victim, "r+b") as fh:  # edited in place: the same inode, size and mtime
        first = fh.read(1)
        fh.seek(0)
        fh.write(b" " if first != b" " else b"\n")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    out["d"] = run("d")
    out["d_verify"] = audit.verify(out["d"])
    out["e"] = run("e", reuse=False)
    return out


@pytest.mark.e2e
def test_nothing_changed_recomputes_no_sleeve_and_its_artifacts_equal_the_earlier_runs(reuse_runs):
    b = reuse_runs["b_seen"]
    reused = b["reused"]
    assert {reused[("sleeve", n)] for n in SLEEVES} == {"a"}
    # the meta chain above unchanged sleeves is reused too; what writes the run's identity is not
    assert {s for s, _ in reused} == {"sleeve", "meta_returns", "meta_optimize", "node_returns"}
    assert not {s for s, _ in b["computed"]} & {"sleeve", "meta_returns", "meta_optimize", "node_returns"}
    for node, files in reuse_runs["a_files"].items():
        assert b["files"][node] == files, node
    record = next(e for e in b["stages"] if e["stage"] == "sleeve" and e["node"] == "sleeves/tech")
    assert record["params"]["reused"]["artifacts"]["returns"] == "sleeves/tech/returns.parquet"
    assert record["params"]["config"]["universe"]["symbols"] == ["AAPL", "MSFT", "AMD"]  # the computing run's params
    # verified after the run it reused was deleted
    assert reuse_runs["b_verify"] == []


@pytest.mark.e2e
def test_one_sleeve_edited_recomputes_that_sleeve_and_the_meta_chain_only(reuse_runs):
    c = reuse_runs["c"]
    assert ("sleeve", "sleeves/tech") in _computed(c)
    reused = _reused(c)
    assert reused[("sleeve", "sleeves/staples")] == reused[("sleeve", "sleeves/factors")] == "b"
    assert {("meta_returns", "."), ("meta_optimize", "."), ("node_returns", ".")} <= _computed(c)
    assert not {s for s, _ in reused} - {"sleeve"}


@pytest.mark.e2e
def test_a_tampered_or_deleted_earlier_run_is_not_reused(reuse_runs):
    d, a_files = reuse_runs["d"], reuse_runs["a_files"]
    computed, reused = _computed(d), _reused(d)
    assert reuse_runs["store"] == {"sleeves/tech": {"b", "c"}, "sleeves/staples": {"c"}, "sleeves/factors": {"c"}}
    assert ("sleeve", "sleeves/tech") in computed  # the run its entry named is gone
    assert ("sleeve", "sleeves/staples") in computed  # a file of the named run was edited in place
    assert reused[("sleeve", "sleeves/factors")] == "c"
    for node in SLEEVES[:2]:
        assert {k: v for k, v in _files(d, node).items() if k != "provenance.json"} == {
            k: v for k, v in a_files[node].items() if k != "provenance.json"
        }, node
    assert reuse_runs["d_verify"] == []


@pytest.mark.e2e
def test_reuse_off_recomputes_everything(reuse_runs):
    e = reuse_runs["e"]
    assert _reused(e) == {}
    assert {("sleeve", n) for n in SLEEVES} <= _computed(e)
    for node in (*SLEEVES, "meta"):  # a recomputed node has the bytes a reused one had
        assert {k: v for k, v in _files(e, node).items() if k != "provenance.json"} == {
            k: v for k, v in reuse_runs["a_files"][node].items() if k != "provenance.json"
        }, node


def test_no_reuse_option_and_the_table():
    args = build_parser("x", "y").parse_args(["--profile", "meta_small", "--no-reuse"])
    assert args.no_reuse is True
    assert MetaPipeline("meta_small", manifest=SMALL_MANIFEST, dry_run=True, reuse=False).config()["reuse"] is False
    assert [s.name for s in steps.STEPS.values() if s.reuse] == ["sleeve", "meta_returns", "meta_optimize", "node_returns"]
    for step in steps.STEPS.values():
        # a job's inputs from outside the run count by path in its key: their bytes are in its params
        if any(isinstance(spec, steps.Outside) for spec in step.inputs.values()):
            assert steps.CONTENT in steps.rule_params(step.name), step.name
        # a reused output never carries the run's identity (but a reused sleeve's provenance, which
        # names the run that computed it: its artifacts are what reuse takes)
        if step.reuse and step.name != "sleeve":
            assert "run_id" not in inspect.signature(step.load()).parameters, step.name


def test_a_jobs_key_is_the_same_in_the_dag_and_in_its_run_block(tmp_path):
    """The owner asks at onstart with the DAG's job, whose empty named input (a sleeve on skfolio's data
    has no price file) a rule's ``run:`` block leaves out: both spell one key."""
    from types import SimpleNamespace

    from tradingview_scraper.stages._reuse import job_key

    ctx, step = SimpleNamespace(run_dir=tmp_path / "r"), steps.step("sleeve")
    outs, params = {"returns": str(tmp_path / "r/sleeves/a/returns.parquet")}, {"sleeve": "{}", "code": "sleeve@x"}
    key = job_key(step, ctx, "sleeves/a", None, {}, outs, params)
    assert job_key(step, ctx, "sleeves/a", None, {"prices": []}, outs, params) == key
    assert job_key(step, ctx, "sleeves/a", None, {"prices": ["p.csv"]}, outs, params) != key
    assert job_key(step, ctx, "sleeves/a", None, {}, outs, {**params, "code": "sleeve@y"}) != key
