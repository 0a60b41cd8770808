"""External sleeves: a strategy run elsewhere enters the meta layer from its files (issue 22 item 1).

One real run (in-process sleeves) of a meta profile with a computed sleeve and an external one
whose returns file is on a 24x7 calendar (so its periods compound into the common dates), one
column per risk profile, and a holdings map (a CSV for one risk profile, a JSON file for the
other). Its column in the meta returns equals the file compounded onto the common dates
(1e-12); its book flattens exactly (1e-12); editing either file with its mtime put back reruns
what depends on it; a bad file stops the run in one line naming the file and the row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.external import read_book, read_returns
from tradingview_scraper.manifest import load_plan

from .conftest import PROJECT, SMALL_MANIFEST

PROFILES = ["equal_weight", "min_variance"]
BOOK_EW = "symbol,direction,weight\nSPY,LONG,0.5\nTLT,SHORT,0.3\nAAPL,LONG,0.2\n"
BOOK_MV = {"weights": [{"symbol": "GLD", "direction": "LONG", "weight": 0.75}, {"symbol": "AAPL", "direction": "LONG", "weight": 0.25}]}


def _stream_csv(path: Path, seed: int = 22) -> None:
    """Every calendar day 2019-01-01 .. 2021-12-31 (weekends too), a column per risk profile."""
    dates = pd.date_range("2019-01-01", "2021-12-31", freq="D")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {"date": dates.strftime("%Y-%m-%d"), "equal_weight": rng.normal(3e-4, 6e-3, len(dates)),
         "min_variance": rng.normal(2e-4, 4e-3, len(dates))}
    )  # fmt: skip
    frame.to_csv(path, index=False, float_format="%.10f")


def _manifest(base: Path) -> dict:
    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["meta_ext"] = {
        "sleeves": [
            {"id": "tech", "profile": "tech"},
            {"id": "trend", "external": {"returns": str(base / "trend.csv"),
                                          "holdings": {"equal_weight": str(base / "book_ew.csv"),
                                                       "min_variance": str(base / "book_mv.json")}}},
        ],
        "profiles": PROFILES,
    }  # fmt: skip
    return m


@pytest.fixture(scope="module")
def ext_run(tmp_path_factory):
    """One real run of ``meta_ext`` (tech computed in-process, trend external)."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    base = tmp_path_factory.mktemp("external")
    _stream_csv(base / "trend.csv")
    (base / "book_ew.csv").write_text(BOOK_EW)
    (base / "book_mv.json").write_text(json.dumps(BOOK_MV))
    manifest = base / "manifest.json"
    manifest.write_text(json.dumps(_manifest(base)))
    runs = base / "runs"
    MetaPipeline("meta_ext", manifest=manifest, run_id="r", runs_root=runs, ray=False).execute()
    return base, manifest, runs, runs / "r"


def test_the_external_column_is_its_file_compounded_onto_the_common_dates(ext_run):
    base, _, _, run = ext_run
    raw = pd.read_csv(base / "trend.csv", parse_dates=["date"]).set_index("date")
    for p in PROFILES:
        meta = pd.read_parquet(run / f"meta/returns_{p}.parquet")
        common = meta.index
        assert len(common) < len(raw)  # weekends and holidays compounded into the next common date
        wealth = (1.0 + raw[p]).cumprod()
        expected = wealth.loc[common] / wealth.loc[common].shift(1) - 1.0
        expected.iloc[0] = raw[p].loc[common[0]]  # the first common date: that date's own return
        np.testing.assert_allclose(meta["trend"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
        # the sleeve interface holds the file as it is
        own = pd.read_parquet(run / "sleeves/trend/returns.parquet")
        np.testing.assert_array_equal(own[p].to_numpy(), raw[p].to_numpy())


def test_the_external_book_flattens_exactly(ext_run):
    _, _, _, run = ext_run
    books = {"equal_weight": {("SPY", "LONG"): 0.5, ("TLT", "SHORT"): 0.3, ("AAPL", "LONG"): 0.2},
             "min_variance": {("GLD", "LONG"): 0.75, ("AAPL", "LONG"): 0.25}}  # fmt: skip
    for p in PROFILES:
        flat = json.loads((run / f"flattened_{p}.json").read_text())
        w = json.loads((run / f"meta/weights_{p}.json").read_text())["weights"]["trend"]
        tech = {(r["symbol"], r["direction"]): r["weight"] for r in json.loads((run / f"sleeves/tech/weights_{p}.json").read_text())["weights"]}
        rows = {(r["symbol"], r["direction"]): r for r in flat["weights"]}
        for key, weight in books[p].items():
            assert abs(rows[key]["sleeves"]["trend"] - w * weight) <= 1e-12, (p, key)
            assert abs(rows[key]["weight"] - sum(rows[key]["sleeves"].values())) <= 1e-12
            if key[1] == "SHORT":
                assert rows[key]["net_weight"] == -rows[key]["weight"]
        assert abs(rows[("AAPL", "LONG")]["sleeves"].get("tech", 0.0) - (1 - w) * tech.get(("AAPL", "LONG"), 0.0)) <= 1e-12
        assert abs(sum(r["weight"] for r in flat["weights"]) - 1.0) <= 1e-9


def test_risk_report_and_ledger_take_it_like_any_sleeve(ext_run):
    from tradingview_scraper import audit

    _, _, _, run = ext_run
    assert audit.verify(run) == []
    report = (run / "report.md").read_text()
    assert "Sleeves: tech (computed), trend (external)." in report
    for p in PROFILES:
        risk = json.loads((run / f"risk_{p}.json").read_text())["assets"]
        assert sum(r["contribution"] for r in risk["rows"]) == pytest.approx(risk["volatility"], abs=1e-12)
        assert {e["sleeve"] for e in risk["external_positions"]} == {"trend"}
    prov = json.loads((run / "sleeves/trend/provenance.json").read_text())
    assert prov["kind"] == "external" and prov["computed"] is False and len(prov["sha256"]) == 3


def test_the_in_memory_api_composes_it_as_the_workflow_does(ext_run):
    from tradingview_scraper.api import run_plan

    _, manifest, _, run = ext_run
    result = run_plan("meta_ext", manifest=manifest)
    for p in PROFILES:
        meta = pd.read_parquet(run / f"meta/returns_{p}.parquet")
        pd.testing.assert_frame_equal(result.sleeve_streams(p), meta, check_freq=False, check_names=False)
        flat = json.loads((run / f"flattened_{p}.json").read_text())["weights"]
        got = result.holdings(p)
        np.testing.assert_allclose(got["weight"].to_numpy(), [r["weight"] for r in flat], rtol=0, atol=1e-12)


def _jobs(manifest: Path, runs: Path) -> set[str]:
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    jobs = MetaPipeline("meta_ext", manifest=manifest, run_id="r", runs_root=runs, ray=False, dry_run=True).execute().jobs
    return {j.rule for j in jobs} - {"all"}


@pytest.mark.parametrize("name", ["trend.csv", "book_ew.csv"])
def test_editing_either_file_with_its_mtime_put_back_reruns_what_depends_on_it(ext_run, name):
    base, manifest, runs, _ = ext_run
    assert _jobs(manifest, runs) == set()
    path = base / name
    original, stat = path.read_bytes(), path.stat()
    # same length, same mtime: only the content tells
    edited = original.replace(b"0.5\n", b"0.4\n").replace(b"0.2\n", b"0.3\n") if name.startswith("book") else None
    if edited is None:
        lines = original.split(b"\n")
        lines[5] = lines[5][:-1] + (b"1" if lines[5][-1:] != b"1" else b"2")
        edited = b"\n".join(lines)
    assert edited != original and len(edited) == len(original)
    try:
        path.write_bytes(edited)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        ran = _jobs(manifest, runs)
        assert {"external_sleeve", "meta_returns", "meta_optimize", "flatten", "report"} <= ran, ran
        assert "sleeve" not in ran
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _jobs(manifest, runs) == set()


def test_a_bad_row_stops_the_run_in_one_line_naming_file_and_row(ext_run, tmp_path, capfd):
    from tradingview_scraper.orchestration.cli import main

    base, _, _, _ = ext_run
    bad = tmp_path / "trend.csv"
    lines = (base / "trend.csv").read_text().splitlines()
    lines[40] = lines[40].split(",")[0] + ",inf,0.001"
    bad.write_text("\n".join(lines) + "\n")
    m = _manifest(base)
    m["profiles"]["meta_ext"]["sleeves"][1]["external"]["returns"] = str(bad)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(m))
    capfd.readouterr()
    try:
        code = main(["--profile", "meta_ext", "--manifest", str(path), "--runs-root", str(tmp_path / "runs"), "--no-ray",
                     "--profiles", "equal_weight"], prog="run_meta_pipeline.py", require_meta=True)  # fmt: skip
    except SystemExit as exc:
        code = exc.code
    err = [line for line in capfd.readouterr().err.strip().splitlines() if line.strip()]
    assert code != 0 and len(err) == 1, err
    assert f"sleeve 'trend': {bad}: line 41: 'equal_weight' value 'inf' is not a finite number" in err[0], err


def test_a_missing_file_is_refused_before_any_work(ext_run, tmp_path, capfd):
    from tradingview_scraper.orchestration.cli import main

    base, _, _, _ = ext_run
    m = _manifest(base)
    m["profiles"]["meta_ext"]["sleeves"][1]["external"]["holdings"]["min_variance"] = str(tmp_path / "nope.csv")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(m))
    capfd.readouterr()
    try:
        code = main(["--profile", "meta_ext", "--manifest", str(path), "--runs-root", str(tmp_path / "runs"), "--no-ray"],
                    prog="run_meta_pipeline.py", require_meta=True)  # fmt: skip
    except SystemExit as exc:
        code = exc.code
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert f"sleeve 'trend': external.holdings file {tmp_path / 'nope.csv'} not found" in err[0], err
    assert not (tmp_path / "runs" / "r").exists()
    assert not any((tmp_path / "runs").glob("*/sleeves"))


def _all_external(base: Path, rows: int | None = None) -> dict:
    """A two-level tree of external sleeves only (nothing computed): ``outer`` = [inner (meta), c]."""
    _stream_csv(base / "s.csv")
    _stream_csv(base / "s2.csv", seed=23)
    _stream_csv(base / "s3.csv", seed=24)
    if rows is not None:
        lines = (base / "s3.csv").read_text().splitlines()[: rows + 1]
        (base / "short.csv").write_text("\n".join(lines) + "\n")
    (base / "a.csv").write_text(BOOK_EW)
    (base / "b.json").write_text(json.dumps(BOOK_MV))

    def ext(book: str, returns: str = "s.csv") -> dict:
        return {"returns": str(base / returns), "holdings": str(base / book)}

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["inner"] = {"sleeves": [{"id": "a", "external": ext("a.csv")}, {"id": "b", "external": ext("b.json", "s2.csv")}],
                              "profiles": ["equal_weight"]}  # fmt: skip
    last = ext("b.json", "short.csv" if rows is not None else "s3.csv")
    m["profiles"]["outer"] = {"sleeves": [{"id": "in", "meta_profile": "inner"}, {"id": "c", "external": last}],
                              "profiles": ["equal_weight"]}  # fmt: skip
    return m


def test_nested_external_sleeves_flatten_through_the_tree(tmp_path):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_all_external(tmp_path)))
    run = MetaPipeline("outer", manifest=manifest, run_id="n", runs_root=tmp_path / "runs", ray=False).execute().run_dir
    root = json.loads((run / "meta/weights_equal_weight.json").read_text())["weights"]
    inner = json.loads((run / "sleeves/in/meta/weights_equal_weight.json").read_text())["weights"]
    flat = {(r["symbol"], r["direction"]): r["weight"] for r in json.loads((run / "flattened_equal_weight.json").read_text())["weights"]}
    expected = {("SPY", "LONG"): root["in"] * inner["a"] * 0.5, ("TLT", "SHORT"): root["in"] * inner["a"] * 0.3,
                ("GLD", "LONG"): (root["in"] * inner["b"] + root["c"]) * 0.75}  # fmt: skip
    for key, w in expected.items():
        assert abs(flat[key] - w) <= 1e-12, key
    assert "Sleeves: c (external), in (nested)." in (run / "report.md").read_text()
    assert "Sleeves: a (external), b (external)." in (run / "sleeves/in/report.md").read_text()
    risk = json.loads((run / "risk_equal_weight.json").read_text())["assets"]
    assert sum(r["contribution"] for r in risk["rows"]) == pytest.approx(risk["volatility"], abs=1e-12)


def test_too_little_overlap_stops_the_meta_layer_in_one_line(tmp_path):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_all_external(tmp_path, rows=100)))
    with pytest.raises(DataError, match=r"sleeves share only \d+ common dates, fewer than the 147 needed .* c 2019-01-01..2019-04-10 \(100\)") as info:
        MetaPipeline("outer", manifest=manifest, run_id="o", runs_root=tmp_path / "runs", ray=False).execute()
    assert "\n" not in str(info.value)


def test_a_position_takes_its_prices_from_a_computed_sleeve_before_an_external_one():
    from tradingview_scraper.compose import held_by
    from tradingview_scraper.manifest import NodeSpec

    ext = NodeSpec("sleeves/x", "external", "m", "x", {})
    tech = NodeSpec("sleeves/t", "atomic", "tech", "t", {})
    row = {"symbol": "AAPL", "direction": "LONG", "weight": 1.0}
    books = {"x": {"weights": [row, {**row, "symbol": "SPY"}]}, "t": {"weights": [row]}}
    assert held_by([ext, tech], books) == [
        {"symbol": "AAPL", "direction": "LONG", "sleeve": "sleeves/t"},
        {"symbol": "SPY", "direction": "LONG", "sleeve": "sleeves/x"},
    ]


# --------------------------------------------------------------------------- the readers


def _write(tmp_path: Path, text: str, name: str = "r.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("day,return\n2020-01-01,0.1\n", r"no 'date' column \(found day, return\)"),
        ("date,ret\n2020-01-01,0.1\n2020-01-02,0.1\n", r"no 'return' column and no column for risk profile\(s\) hrp"),
        ("date,return\n2020-01-01,0.1\n2020-01-02,nan\n", r"line 3: 'return' value 'nan' is not a finite number"),
        ("date,return\n2020-01-01,0.1\n2020-01-02,\n", r"line 3: 'return' value '' is not a finite number"),
        ("date,return\n2020-01-01,0.1\n2020-01-02,abc\n", r"line 3: 'return' value 'abc' is not a finite number"),
        ("date,return\n2020-01-01,0.1\n2020-01-02,-1.0\n", r"line 3: return '-1.0' in column 'return' is -100% or less"),
        ("date,return\n2020-01-01,0.1\n2020-01-01,0.1\n", r"line 3: date 2020-01-01 repeats the previous row's"),
        ("date,return\n2020-01-02,0.1\n2020-01-01,0.1\n", r"line 3: date 2020-01-01 comes before the previous row's"),
        ("date,return\n2020-01-01,0.1\nsoon,0.1\n", r"line 3: date 'soon' is not a date"),
    ],
)
def test_a_bad_returns_file_is_one_line_naming_file_and_row(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=rf"^{str(path)}: {message}") as info:
        read_returns(path, ["hrp"])
    assert "\n" not in str(info.value)


def test_parquet_and_one_column_per_profile(tmp_path):
    frame = pd.DataFrame({"date": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]),
                          "hrp": [0.01, -0.02, 0.0], "cvar": [0.0, 0.01, -0.5], "other": ["x", "y", "z"]})  # fmt: skip
    frame.to_parquet(tmp_path / "r.parquet")
    got = read_returns(tmp_path / "r.parquet", ["cvar", "hrp"])
    assert list(got.columns) == ["cvar", "hrp"] and got.index.name == "date"
    np.testing.assert_array_equal(got["hrp"].to_numpy(), [0.01, -0.02, 0.0])
    frame.loc[1, "hrp"] = -1.5
    frame.to_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"r.parquet: row 1: return -1.5 in column 'hrp' is -100% or less"):
        read_returns(tmp_path / "r.parquet", ["hrp"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("symbol,direction,weight\nSPY,LONG,0.5\nTLT,SIDEWAYS,0.5\n", r"line 3: direction 'SIDEWAYS' is not LONG or SHORT"),
        ("symbol,direction,weight\nSPY,LONG,0.5\nTLT,LONG,-0.5\n", r"line 3: weight '-0.5' of TLT LONG is not a finite number >= 0"),
        ("symbol,direction\nSPY,LONG\n", r"line 1: a holdings CSV needs columns symbol, direction, weight \(or quantity\); missing weight"),
        ("symbol,direction,quantity\nSPY,LONG,10\n", r"an external sleeve's book gives weights, not quantities"),
        ("symbol,direction,weight\nSPY,LONG,0.5\nTLT,LONG,0.4\n", r"gross weights add up to 0.9, not 1"),
        ("symbol,direction,weight\nSPY,LONG,0.5\nSPY,LONG,0.5\n", r"line 3: SPY LONG repeats line 2"),
    ],
)
def test_a_bad_holdings_row_is_one_line_naming_file_and_row(tmp_path, text, message):
    path = _write(tmp_path, text, "book.csv")
    with pytest.raises(DataError, match=rf"^{str(path)}: {message}") as info:
        read_book(path)
    assert "\n" not in str(info.value)


def test_manifest_refusals(write_manifest, tmp_path):
    m = _manifest(tmp_path)
    m["profiles"]["meta_ext"]["profiles"] = ["equal_weight", "hrp"]
    with pytest.raises(ConfigError, match=r"sleeve 'trend': external.holdings names no file for risk profile\(s\) hrp"):
        load_plan("meta_ext", write_manifest(m))
    m = _manifest(tmp_path)
    m["profiles"]["meta_ext"]["sleeves"][1]["profile"] = "tech"
    with pytest.raises(ConfigError):
        load_plan("meta_ext", write_manifest(m))
    m = _manifest(tmp_path)
    m["profiles"]["meta_ext"]["sleeves"][1]["external"]["returns"] = str(tmp_path / "{profile}.csv")
    with pytest.raises(ConfigError, match=r"sleeve 'trend': external.returns .* has a part Snakemake reads as a wildcard"):
        load_plan("meta_ext", write_manifest(m))
    plan = load_plan("meta_ext", write_manifest(_manifest(tmp_path)))
    assert [n.sleeve_id for n in plan.external_nodes()] == ["trend"]
    assert plan.nodes["sleeves/trend"].config["backtest"] == plan.root.config["backtest"]


# --------------------------------------------------------------------------- the shipped example


def test_the_example_script_rewrites_the_shipped_files_and_says_synthetic(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mx", PROJECT / "scripts" / "make_external_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.write_example(tmp_path):
        assert path.name.startswith("SYNTHETIC_")
        assert (PROJECT / "data" / "external" / path.name).read_bytes() == path.read_bytes()
    profile = json.loads((PROJECT / "config" / "manifest.json").read_text())["profiles"]["meta_custom"]
    assert "SYNTHETIC" in profile["description"]
    kinds = [("external" in s, "profile" in s) for s in profile["sleeves"]]
    assert (True, False) in kinds and (False, True) in kinds
    assert any(isinstance(p, dict) and p["name"] == "cvar" for p in profile["profiles"])


@pytest.mark.e2e
def test_meta_custom_runs_from_a_fresh_clone(tmp_path):
    """``git clone`` of the committed tree, then the README's command's script (the project's venv)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT), str(clone)], check=True, timeout=120)
    proc = subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", "--profile", "meta_custom", "--run-id", "c", "--no-ray", "--quiet"],
        cwd=clone, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(clone)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = clone / "data" / "runs" / "c"
    assert "trend (external)" in (run / "report.md").read_text()
    flat = json.loads((run / "flattened_cvar.json").read_text())
    assert {"tech", "trend"} == set(flat["sleeve_weights"])
    # A rebalance against that run: the external sleeve's positions have no price table, so they
    # keep their weight, named on the console (this stopped with KeyError: 'universe').
    proc = subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", "--profile", "meta_custom", "--run-id", "d", "--previous-run", "c",
         "--no-ray", "--quiet"],
        cwd=clone, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(clone)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SPY LONG" in proc.stderr and "not drifted (cvar)" in proc.stderr
    rebalance = json.loads((clone / "data" / "runs" / "d" / "rebalance_cvar.json").read_text())
    assert {r["symbol"] for r in rebalance["rows"]} >= {"SPY", "GLD", "TLT", "USO"}


def test_the_step_gets_its_files_as_paths_records_each_once_and_writes_returns_last(tmp_path, monkeypatch):
    """The shipped ``meta_custom``'s external sleeve through the one adapter, its files named relative
    to the project: the step reads them by path, the ledger records each once by where it is (the
    holdings file both risk profiles share too) with its sha256, and ``returns.parquet``, the file
    the meta layer's DAG and a resumed run wait on, is written after every other output."""
    from tradingview_scraper import audit, stages, steps
    from tradingview_scraper.rule_inputs import Wiring
    from tradingview_scraper.run import RunContext

    from .helpers import ledger, sleeve_outputs

    monkeypatch.chdir(PROJECT)
    plan = load_plan("meta_custom", PROJECT / "config" / "manifest.json")
    ctx = RunContext(plan=plan, run_id="ext", runs_root=tmp_path, base_dir=Path("."))
    node = ctx.node("sleeves/trend")
    files = Wiring(ctx).external_files(str(node.dir))
    assert not os.path.isabs(files["returns"]) and len(set(files["holdings"])) == 1 < len(files["holdings"])
    seen: list[stages.StageIO] = []
    with stages.watch(seen.append):
        stages.run_step(steps.step("external_sleeve"), ctx, "sleeves/trend", input=files, output=sleeve_outputs(ctx, "sleeves/trend"))
    assert Path(seen[0].writes[-1]).name == "returns.parquet" and len(seen[0].writes) == 4 + len(plan.risk_profiles)
    entry = [e for e in ledger(ctx.run_dir) if e.get("stage") == "external_sleeve"][0]
    read = [(ctx.run_dir / i["path"]).resolve() for i in entry["inputs"]]
    assert read == [(PROJECT / files["returns"]).resolve(), (PROJECT / files["holdings"][0]).resolve()]
    assert all(i["sha256"] == audit.file_sha256(p) for i, p in zip(entry["inputs"], read, strict=True))
    assert entry["params"] == {"sleeve": "trend", "external": plan.nodes["sleeves/trend"].config["external"]}
    assert json.loads((node.file("provenance")).read_text())["returns"] == files["returns"]  # the path as given
