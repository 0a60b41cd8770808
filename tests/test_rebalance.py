"""Rebalance: holdings parsing, the trade identities, and real runs with a previous run or a holdings file."""

from __future__ import annotations

import json
import math
import os

import pytest

from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.holdings import read_holdings
from tradingview_scraper.orchestration import cli
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.rebalance import rebalance
from tradingview_scraper.run import rebalance_book

from .conftest import SMALL_MANIFEST
from .test_trading import _last_prices

PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]
COST_RATE = 0.0005 + 0.0005  # the small manifest's commission + slippage


def _json(path):
    return json.loads(path.read_text())


def _recorded(run_dir, profile: str) -> dict:
    """The ledger entry of the last rebalance of ``profile`` in ``run_dir``."""
    entries = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    return [e for e in entries if e.get("stage") == "rebalance" and e["params"]["profile"] == profile][-1]


# --------------------------------------------------------------------------- pure function


def test_trades_are_target_minus_current_and_positions_appear_and_disappear():
    target = [
        {"symbol": "A", "direction": "LONG", "weight": 0.6, "sleeves": {"s1": 0.6}},
        {"symbol": "B", "direction": "SHORT", "weight": 0.4, "sleeves": {"s2": 0.4}},
    ]
    current = [
        {"symbol": "A", "direction": "LONG", "weight": 0.5},
        {"symbol": "C", "direction": "LONG", "weight": 0.3},
    ]
    out = rebalance(target, current, cost_rate=0.002)
    rows = {(r["symbol"], r["direction"]): r for r in out["rows"]}
    assert set(rows) == {("A", "LONG"), ("B", "SHORT"), ("C", "LONG")}
    assert rows[("A", "LONG")]["trade"] == pytest.approx(0.1, abs=1e-15)
    assert rows[("B", "SHORT")]["trade"] == 0.4 and rows[("B", "SHORT")]["net_trade"] == -0.4  # appears
    assert rows[("C", "LONG")]["trade"] == -0.3 and rows[("C", "LONG")]["target_weight"] == 0.0  # disappears
    assert out["traded"] == pytest.approx(0.8) and out["turnover_one_way"] == pytest.approx(0.4)
    assert out["estimated_cost"] == pytest.approx(0.002 * 0.8) and out["n_trades"] == 3
    assert out["current_gross"] == pytest.approx(0.8) and out["target_gross"] == pytest.approx(1.0)


def test_previous_run_splits_each_trade_by_sleeve():
    target = [{"symbol": "A", "direction": "LONG", "weight": 1.0, "sleeves": {"s1": 0.7, "s2": 0.3}}]
    current = [{"symbol": "A", "direction": "LONG", "weight": 0.9, "sleeves": {"s1": 0.4, "s2": 0.5}}]
    row = rebalance(target, current, cost_rate=0.0, current_sleeves=True)["rows"][0]
    assert row["drivers"] == ["s1", "s2"]  # s1 +0.3, s2 -0.2
    assert row["current_sleeves"] == {"s1": 0.4, "s2": 0.5}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("symbol,direction,weight\nAAPL,LONG,0.5\nMSFT,SIDEWAYS,0.2\n", r"line 3: direction 'SIDEWAYS' is not LONG or SHORT"),
        ("symbol,direction,weight\nAAPL,LONG,-0.1\n", r"line 2: weight '-0.1' of AAPL LONG is not a finite number >= 0"),
        ("symbol,direction,weight\nAAPL,LONG,abc\n", r"line 2: weight 'abc'"),
        ("symbol,direction,weight\nAAPL,LONG,nan\n", r"line 2: weight 'nan'"),
        ("symbol,direction,weight\nAAPL,LONG,0.2\nAAPL,LONG,0.3\n", r"line 3: AAPL LONG repeats line 2"),
        ("symbol,direction,weight\n,LONG,0.2\n", r"line 2: missing symbol"),
        ("symbol,weight\nAAPL,0.2\n", r"line 1: .*missing direction"),
        ("symbol,direction,weight\nAAPL,LONG,0.7\nMSFT,LONG,0.7\n", r"gross weights add up to 1.4"),
        ("symbol,direction,weight\nAAPL,LONG,0.2,9\n", r"line 2: more fields"),
    ],
)
def test_bad_holdings_csv_is_one_line_naming_the_row(tmp_path, text, match):
    path = _write(tmp_path, "book.csv", text)
    with pytest.raises(DataError, match=match) as info:
        read_holdings(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_holdings_json_forms_and_bad_json_row(tmp_path):
    rows = [{"symbol": "AAPL", "direction": "long", "weight": 0.25}]
    assert read_holdings(_write(tmp_path, "a.json", json.dumps(rows))) == [
        {"symbol": "AAPL", "direction": "LONG", "weight": 0.25}
    ]
    assert read_holdings(_write(tmp_path, "b.json", json.dumps({"weights": rows}))) == read_holdings(tmp_path / "a.json")
    with pytest.raises(DataError, match=r"row\[1\]: weight True"):
        read_holdings(_write(tmp_path, "c.json", json.dumps([*rows, {"symbol": "X", "direction": "LONG", "weight": True}])))
    with pytest.raises(DataError, match="cannot read as JSON"):
        read_holdings(_write(tmp_path, "d.json", "{"))
    assert read_holdings(_write(tmp_path, "cash.csv", "symbol,direction,weight\n")) == []


def test_previous_run_and_holdings_exclude_each_other():
    with pytest.raises(ConfigError, match="both set"):
        rebalance_book("a", "book.csv")
    with pytest.raises(ConfigError, match="previous_run"):
        rebalance_book("../x", None)


def test_missing_previous_run_is_refused_before_work(runs_root):
    with pytest.raises(DataError, match=r"previous_run 'nope' .*no flattened weights"):
        MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="x", runs_root=runs_root, previous_run="nope")
    with pytest.raises(ConfigError, match="this run's own id"):
        MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="x", runs_root=runs_root, previous_run="x")


# --------------------------------------------------------------------------- real runs


@pytest.mark.e2e
@pytest.mark.parametrize("profile", PROFILES)
def test_rebalance_identities_on_a_real_run(pm_runs, profile):
    reb = _json(pm_runs["now"] / f"rebalance_{profile}.json")
    flat = _json(pm_runs["now"] / f"flattened_{profile}.json")
    prev = _json(pm_runs["prev"] / f"flattened_{profile}.json")
    assert reb["current"]["kind"] == "previous_run" and reb["current"]["run_id"] == "prev"
    rows = {(r["symbol"], r["direction"]): r for r in reb["rows"]}
    target = {(r["symbol"], r["direction"]): r["weight"] for r in flat["weights"]}
    current = {(r["symbol"], r["direction"]): r["weight"] for r in prev["weights"]}
    assert set(rows) == set(target) | set(current)
    drift = reb["current"]["drift"]
    value = drift["book_value"]
    series = _last_prices()
    growths = {k[0]: float(series[k[0]].iloc[-1]) / float(series[k[0]].loc[: drift["from"]].iloc[-1]) for k in current}
    for key, row in rows.items():
        assert row["target_weight"] == target.get(key, 0.0)  # exactly the flattened weight
        # The previous book as it drifted to this run's prices (tests/test_trading.py checks each weight).
        growth = growths[key[0]] if key in current else 1.0
        assert abs(row["current_weight"] - current.get(key, 0.0) * growth / value) <= 1e-12
        assert abs(row["trade"] - (row["target_weight"] - row["current_weight"])) <= 1e-12
    if profile != "equal_weight":  # equal weights do not depend on the data
        assert any(r["trade"] != 0 for r in reb["rows"]), "different data must give trades"
    traded = math.fsum(abs(r["trade"]) for r in reb["rows"])
    assert reb["traded"] == pytest.approx(traded, abs=1e-12)
    assert reb["turnover_one_way"] == pytest.approx(traded / 2, abs=1e-12)
    assert reb["cost_rate"] == pytest.approx(COST_RATE)
    assert reb["estimated_cost"] == pytest.approx(COST_RATE * traded, abs=1e-15)
    for sid, sw in reb["sleeve_weights"].items():
        assert sw["target"] == flat["sleeve_weights"][sid] and sw["previous"] == prev["sleeve_weights"][sid]
        assert sw["change"] == pytest.approx(sw["target"] - sw["previous"], abs=1e-15)


@pytest.mark.e2e
def test_the_ledger_names_what_a_previous_runs_rebalance_read(pm_runs):
    # this run's target and last date, the previous run's book and last date: no price file
    entry = _recorded(pm_runs["now"], "hrp")
    assert [f["path"] for f in entry["inputs"]] == [
        "flattened_hrp.json", "../prev/flattened_hrp.json", "returns.parquet", "../prev/returns.parquet"
    ]  # fmt: skip
    assert entry["params"] == {"profile": "hrp", "previous_run": "prev", "holdings": None, "commission": 0.0005,
                               "slippage": 0.0005}  # fmt: skip
    assert [f["path"] for f in entry["outputs"]] == ["rebalance_hrp.json"]


@pytest.mark.e2e
def test_changed_holdings_file_reruns_only_the_rebalance(pm_runs, tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("symbol,direction,weight\nAAPL,LONG,0.4\nKO,LONG,0.3\nXOM,SHORT,0.1\n")
    root = pm_runs["root"]
    kw = {"manifest": SMALL_MANIFEST, "run_id": "book", "runs_root": root, "ray": False, "holdings": str(book)}
    MetaPipeline("meta_small", **kw).execute()
    first = _json(root / "book" / "rebalance_hrp.json")
    assert first["current"]["kind"] == "holdings" and first["sleeve_weights"] is None
    xom = next(r for r in first["rows"] if r["symbol"] == "XOM")
    assert xom["target_weight"] == 0.0 and xom["trade"] == -0.1 and xom["net_trade"] == 0.1  # a short disappears
    stamp = {p: (root / "book" / f"flattened_{p}.json").stat().st_mtime_ns for p in PROFILES}
    # The ledger names what the rebalance read: the target and the book; no returns, no price file.
    entry = _recorded(root / "book", "hrp")
    assert [f["path"] for f in entry["inputs"]] == ["flattened_hrp.json", os.path.relpath(book, root / "book")]
    assert entry["params"] == {"profile": "hrp", "previous_run": None, "holdings": str(book), "commission": 0.0005,
                               "slippage": 0.0005}  # fmt: skip

    book.write_text("symbol,direction,weight\nAAPL,LONG,0.2\nMSFT,LONG,0.2\n")
    rerun = MetaPipeline("meta_small", **kw).execute()
    ran = [j.rule for j in rerun.jobs if j.rule != "all"]
    # The rebalance of every risk profile, and the root's report, which shows it: nothing else.
    assert sorted(ran) == sorted(["rebalance"] * len(PROFILES) + ["report"]), ran
    assert stamp == {p: (root / "book" / f"flattened_{p}.json").stat().st_mtime_ns for p in PROFILES}
    second = _json(root / "book" / "rebalance_hrp.json")
    assert {r["symbol"] for r in second["rows"] if r["current_weight"] > 0} == {"AAPL", "MSFT"}
    assert MetaPipeline("meta_small", **kw).execute().jobs == []  # nothing changed: nothing runs


@pytest.mark.e2e
def test_bad_holdings_file_stops_the_cli_before_any_work(tmp_path, capsys):
    book = tmp_path / "book.csv"
    book.write_text("symbol,direction,weight\nAAPL,LONG,0.4\nKO,LONG,x\n")
    runs = tmp_path / "runs"
    argv = ["--profile", "meta_small", "--manifest", str(SMALL_MANIFEST), "--runs-root", str(runs),
            "--run-id", "bad", "--holdings", str(book), "--no-ray"]
    assert cli.main(argv, prog="run_meta_pipeline.py", require_meta=True) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 3" in err and "'x'" in err, err
    assert not (runs / "bad").exists()


@pytest.mark.e2e
def test_plain_snakemake_takes_previous_run_and_refuses_both(pm_runs):
    import subprocess
    import sys

    from .conftest import PROJECT

    base = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "-n", "--cores", "1", "--config",
            "profile=meta_small", "run_id=plain", f"manifest={SMALL_MANIFEST}", f"runs_root={pm_runs['root']}"]
    proc = subprocess.run([*base, "previous_run=prev"], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rebalance" in proc.stdout + proc.stderr
    proc = subprocess.run([*base, "previous_run=prev", "holdings=book.csv"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "are both set" in proc.stdout + proc.stderr
