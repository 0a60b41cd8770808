"""Atomic sleeves in production: user data, bad files, frictions, health, parity, TradingView exports."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import stages, steps
from tradingview_scraper.backtest import walk_forward
from tradingview_scraper.data import load_prices, prices_to_returns
from tradingview_scraper.errors import ConfigError, MetaError, PipelineError, SleeveError
from tradingview_scraper.health import health_gate, sign_gate, unhealthy_profiles
from tradingview_scraper.manifest import NodeSpec, load_plan, resolve
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.run import RunContext
from tradingview_scraper.sleeve import compute_sleeve, sign_test, synthetic_long

from .conftest import PROJECT
from .helpers import sleeve_outputs

SYMBOLS = ["KO", "PEP", "PG"]
SLEEVE_FILES = ["returns.parquet", "health.json", "sign_test.json", "provenance.json"]


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Real daily closes (skfolio's embedded S&P 500 data), 2019-2021."""
    return load_prices({"source": "skfolio", "start": "2019-01-01", "end": "2021-12-31"}, SYMBOLS)


def csv_lines(prices: pd.DataFrame) -> list[str]:
    """A wide price table as CSV lines (header first)."""
    return prices.to_csv(date_format="%Y-%m-%d", float_format="%.6f").splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def with_profiles(manifest: dict, **profiles) -> dict:
    m = copy.deepcopy(manifest)
    m["profiles"].update(profiles)
    return m


def user_profile(path, symbols=SYMBOLS, **extra) -> dict:
    return {"data": {"source": "table", "path": str(path)}, "universe": {"symbols": list(symbols)}, **extra}


def leftovers(run_dir: Path, node: Path) -> list[str]:
    """Sleeve artifacts (and temp files anywhere in the run) left after a failed sleeve job."""
    names = [str(p) for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    names += [str(node / n) for n in SLEEVE_FILES if (node / n).exists()]
    return names + [str(p) for p in node.glob("weights_*.json")]


# --------------------------------------------------------------------------- user data


def test_relative_data_path_resolves_against_base_dir(prices, small_manifest_dict, write_manifest, tmp_path):
    write_lines(tmp_path / "project" / "prices" / "user.csv", csv_lines(prices))
    path = write_manifest(with_profiles(small_manifest_dict, user=user_profile("prices/user.csv")))
    plan = load_plan("user", path, ["equal_weight"])
    ctx = RunContext(plan=plan, run_id="rel", runs_root=tmp_path / "runs", base_dir=tmp_path / "project")
    stages.run_step(steps.step("sleeve"), ctx, ".", output=sleeve_outputs(ctx))
    returns = pd.read_parquet(ctx.run_dir / "returns.parquet")
    assert returns.index[-1] == pd.Timestamp("2021-12-31") and len(returns) == len(prices) - 1 - 126
    elsewhere = RunContext(plan=plan, run_id="rel2", runs_root=tmp_path / "runs", base_dir=tmp_path / "x")
    with pytest.raises(SleeveError, match=rf"price table not found: {tmp_path / 'x' / 'prices' / 'user.csv'}"):
        stages.run_step(steps.step("sleeve"), elsewhere, ".", output=sleeve_outputs(elsewhere))
    assert RunContext.from_config({"profile": "user", "manifest": str(path)}, environ={}).base_dir == Path.cwd()


def _corrupt(lines: list[str], kind: str) -> list[str]:
    out = list(lines)
    cells = out[300].split(",")
    if kind == "text":
        out[300] = ",".join([cells[0], cells[1], "abc", cells[3]])
    elif kind == "negative":
        out[300] = ",".join([cells[0], cells[1], cells[2], "-1.5"])
    elif kind == "duplicate":
        out.insert(301, out[300])
    elif kind == "unsorted":
        out[300], out[301] = out[301], out[300]
    return out


JOB = r"^sleeve 'user' failed: DataError: .*"
BAD_FILES = [
    # a missing file is caught by the runner's pre-flight check, before any job starts
    ("missing", None, r"^profile 'user': price table not found: .*absent\.csv"),
    ("text", "text", JOB + r"prices\.csv: symbol 'PEP', line 301 \(2020-03-11\): price 'abc' is not a number"),
    ("negative", "negative", JOB + r"prices\.csv: symbol 'PG', line 301 \(2020-03-11\): price '-1.5' is not > 0"),
    ("duplicate", "duplicate", JOB + r"prices\.csv: symbol 'KO', line 302: duplicate date 2020-03-11"),
    ("unsorted", "unsorted", JOB + r"prices\.csv: symbol 'KO', line 302: date 2020-03-11 comes after 2020-03-12"),
    ("unknown symbol", "", JOB + r"prices\.csv: symbol 'NOPE' not found"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_data_file_fails_the_sleeve_and_leaves_nothing(prices, small_manifest_dict, write_manifest, tmp_path, case):
    _, kind, pattern = case
    csv = tmp_path / ("absent.csv" if kind is None else "prices.csv")
    if kind is not None:
        write_lines(csv, _corrupt(csv_lines(prices), kind))
    symbols = [*SYMBOLS, "NOPE"] if kind == "" else SYMBOLS
    path = write_manifest(with_profiles(small_manifest_dict, user=user_profile(csv, symbols)))
    runs = tmp_path / "runs"
    with pytest.raises(PipelineError, match=pattern) as err:
        MetaPipeline("user", manifest=path, run_id="bad", runs_root=runs, ray=False, profiles="equal_weight").execute()
    assert "\n" not in str(err.value)
    if kind is None:
        assert not runs.exists(), "nothing may be written before the pre-flight check passes"
    else:
        assert leftovers(runs / "bad", runs / "bad") == []


@pytest.mark.e2e
def test_bad_data_file_on_ray_stops_the_meta_run(prices, small_manifest_dict, write_manifest, tmp_path):
    csv = write_lines(tmp_path / "BINANCE_PEP, 1D.csv", _corrupt(csv_lines(prices), "text"))
    m = with_profiles(
        small_manifest_dict,
        user=user_profile(csv),
        meta_user={"sleeves": [{"id": "staples", "profile": "staples"}, {"id": "user", "profile": "user"}],
                   "profiles": ["equal_weight"]},
    )
    runs = tmp_path / "runs"
    with pytest.raises(PipelineError, match=r"^sleeve 'user' failed: DataError: .*BINANCE_PEP, 1D\.csv: symbol 'PEP'"):
        MetaPipeline("meta_user", manifest=write_manifest(m), run_id="ray", runs_root=runs, ray_num_cpus=1).execute()
    run = runs / "ray"
    assert leftovers(run, run / "sleeves" / "user") == []
    assert not (run / "meta").exists() and not list(run.glob("flattened_*")) and not (run / "report.md").exists()


# --------------------------------------------------------------------------- SHORT


def test_sign_test_fails_when_the_inversion_is_missing(prices):
    raw = prices_to_returns(prices)
    assert sign_test(raw, synthetic_long(raw), "SHORT")["passed"]
    assert not sign_test(raw, raw, "SHORT")["passed"], "raw returns labelled SHORT"
    assert not sign_test(raw, synthetic_long(raw), "LONG")["passed"]
    used = synthetic_long(raw)
    res = walk_forward(used, "min_variance", train_window=126, test_window=21)
    assert sign_test(raw, used, "SHORT", {"mv": (res.returns, res.weights)})["streams"]["mv"]["passed"]
    long_stream = walk_forward(raw, "min_variance", train_window=126, test_window=21)
    record = sign_test(raw, used, "SHORT", {"mv": (long_stream.returns, long_stream.weights)})
    assert not record["passed"] and record["streams"]["mv"]["corr_stream_vs_raw_basket"] > 0


def test_short_losses_are_capped_before_the_optimizer():
    idx = pd.bdate_range("2021-01-01", periods=3)
    raw = pd.DataFrame({"X": [0.1, -0.2, 3.0], "Y": [0.0, 1.0, -0.5]}, index=idx)
    record = sign_test(raw, synthetic_long(raw), "SHORT")
    assert record["passed"] and record["inputs"]["max_abs_error"] == 0.0
    np.testing.assert_allclose(synthetic_long(raw).to_numpy(), [[-0.1, 0.0], [0.2, -1.0], [-1.0, 0.5]])


# --------------------------------------------------------------------------- frictions


def test_manifest_frictions_charge_known_turnover(small_manifest_dict):
    def sleeve(commission, slippage):
        m = copy.deepcopy(small_manifest_dict)
        m["profiles"]["tech"]["backtest"] = {"commission": commission, "slippage": slippage}
        cfg = resolve(m, "tech").root.config
        return compute_sleeve(cfg, ["equal_weight", "min_variance"], sleeve_id="tech", profile="tech"), cfg

    (gross, cfg), (net, _) = sleeve(0.0, 0.0), sleeve(0.001, 0.0005)
    cost = gross.returns - net.returns
    # equal weight: buying from cash is turnover 1, later windows trade nothing
    assert cost["equal_weight"].iloc[0] == pytest.approx(0.0015, abs=1e-15)
    np.testing.assert_allclose(cost["equal_weight"].iloc[1:], 0.0, atol=1e-15)
    # min variance: cost = 0.0015 * sum|w_k - w_{k-1}| on each window's first day, nothing else
    bt = cfg["backtest"]
    raw = prices_to_returns(load_prices(cfg["data"], cfg["universe"]["symbols"]))
    w = walk_forward(raw, "min_variance", train_window=bt["train_window"], test_window=bt["test_window"]).weights
    turnover = w.diff().abs().sum(axis=1)
    turnover.iloc[0] = w.iloc[0].abs().sum()
    expected = (0.0015 * turnover).reindex(cost.index, fill_value=0.0)
    assert turnover.iloc[1:].max() > 0.01, "the windows really trade"
    np.testing.assert_allclose(cost["min_variance"], expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- health


def test_unhealthy_profiles_thresholds():
    rec = {"profiles": {"hrp": {"windows_attempted": 4, "windows_succeeded": 3},
                        "min_variance": {"windows_attempted": 4, "windows_succeeded": 4}}}
    assert unhealthy_profiles(rec, 0.75) == []
    assert unhealthy_profiles(rec, 0.8) == ["hrp (3/4 windows succeeded)"]
    assert unhealthy_profiles(rec, 0.8, ["min_variance"]) == []
    assert unhealthy_profiles(rec, 0.5, ["hrp", "risk_parity"]) == ["risk_parity (no health record)"]
    for empty in ({}, None, {"profiles": {}}):
        assert unhealthy_profiles(empty, 0.0) == ["<no health record>"]
    zero = {"profiles": {"hrp": {"windows_attempted": 0, "windows_succeeded": 0}}}
    assert unhealthy_profiles(zero, 0.0) == ["hrp (0/0 windows succeeded)"]


HALTED = NodeSpec("sleeves/halted", "atomic", "halted", "halted", {"universe": {"direction": "LONG"}})


def test_health_gate_is_one_policy_for_every_node():
    record = {"profiles": {"hrp": {"windows_attempted": 14, "windows_succeeded": 1, "windows_fallback": 13}}}
    strict, lenient = {"min_success_ratio": 0.75, "on_unhealthy": "error"}, {"min_success_ratio": 0.75, "on_unhealthy": "warn"}
    meta = NodeSpec(".", "meta", "m", None, {})
    with pytest.raises(MetaError, match=r"^meta profile 'm' is unhealthy: hrp \(1/14 windows succeeded\) in x; the minimum"):
        health_gate(meta, record, strict, where="x")
    assert health_gate(meta, record, lenient).endswith("; continuing (health.on_unhealthy = warn)")
    assert health_gate(meta, record, {**strict, "min_success_ratio": 0.05}) is None
    # The same verdict on an atomic sleeve is worded for it, and of its own class.
    with pytest.raises(SleeveError, match=r"^sleeve 'halted' is unhealthy: hrp \(1/14"):
        health_gate(HALTED, record, strict)


@pytest.fixture(scope="module")
def halted_run(prices, tmp_path_factory):
    """A meta run whose user-table sleeve holds a symbol halted (constant price) for 80% of its history."""
    tmp = tmp_path_factory.mktemp("halted")
    frame = prices.copy()
    frame["HALT"] = np.where(np.arange(len(frame)) < 600, 50.0, frame["PG"])
    csv = write_lines(tmp / "halted.csv", csv_lines(frame[["KO", "PEP", "HALT"]]))
    small = json.loads((PROJECT / "tests/data/manifest_small.json").read_text())
    m = with_profiles(
        small,
        halted=user_profile(csv, ["KO", "PEP", "HALT"]),
        meta_health={"sleeves": [{"id": "staples", "profile": "staples"}, {"id": "halted", "profile": "halted"}],
                     "profiles": ["equal_weight", "min_variance"]},
    )
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(m))
    runs = tmp / "runs"
    proc = subprocess.run(
        [sys.executable, "scripts/run_meta_pipeline.py", "--profile", "meta_health", "--manifest", str(manifest),
         "--run-id", "sick", "--runs-root", str(runs), "--no-ray"],
        cwd=PROJECT, capture_output=True, text=True,
    )
    return proc, runs / "sick", manifest


@pytest.mark.e2e
def test_unhealthy_sleeve_stops_the_meta_run(halted_run):
    proc, run, _ = halted_run
    assert proc.returncode == 1, proc.stderr
    assert "sleeve 'halted' is unhealthy: min_variance (7/30 windows succeeded)" in proc.stderr
    assert "minimum success ratio is 75%" in proc.stderr
    health = json.loads((run / "sleeves/halted/health.json").read_text())["profiles"]
    assert health["equal_weight"]["windows_succeeded"] == 30
    assert health["min_variance"]["windows_fallback"] == 23
    assert "NonPositiveVarianceError" in health["min_variance"]["errors"][0], "the optimizer really failed"
    assert not (run / "meta").exists() and not list(run.glob("flattened_*")) and not (run / "report.md").exists()
    assert (run / "sleeves/staples/health.json").exists()


@pytest.mark.e2e
def test_health_threshold_and_action_are_configurable(halted_run):
    _, run, _ = halted_run
    health = json.loads((run / "sleeves/halted/health.json").read_text())
    rps = ["equal_weight", "min_variance"]
    with pytest.raises(SleeveError, match=r"sleeve 'halted' is unhealthy: min_variance \(7/30"):
        health_gate(HALTED, health, {"min_success_ratio": 0.75, "on_unhealthy": "error"}, rps)
    assert health_gate(HALTED, health, {"min_success_ratio": 0.2, "on_unhealthy": "error"}, rps) is None
    warning = health_gate(HALTED, health, {"min_success_ratio": 0.75, "on_unhealthy": "warn"}, rps)
    assert "sleeve 'halted' is unhealthy" in warning and "continuing" in warning


def test_missing_health_or_sign_test_counts_as_failure():
    policy = {"min_success_ratio": 0.0, "on_unhealthy": "error"}
    for record in ({}, {"profiles": {}}, {"profiles": {"hrp": {}}}):
        with pytest.raises(SleeveError, match=r"sleeve 'halted' is unhealthy: .*no health record"):
            health_gate(HALTED, record, policy, ["hrp"])
    for record in (None, {}, {"passed": False}):
        with pytest.raises(SleeveError, match=r"sleeve 'halted': sign test missing or failed"):
            sign_gate("sleeve 'halted'", record, "LONG")
    sign_gate("sleeve 'halted'", {"passed": True}, "LONG")


# --------------------------------------------------------------------------- parity


def test_parity_mismatch_is_reported_before_any_work(small_manifest_dict, write_manifest, runs_root):
    m = copy.deepcopy(small_manifest_dict)
    m["profiles"]["energy"]["backtest"] = {"test_window": 10}
    with pytest.raises(ConfigError, match=r"sleeve 'energy': walk-forward windows train/test 126/10 differ"):
        MetaPipeline("meta_two", manifest=write_manifest(m), run_id="p", runs_root=runs_root).execute()
    assert list(runs_root.iterdir()) == []
    m["profiles"]["meta_two"]["health"] = {"on_parity_mismatch": "warn"}
    plan = load_plan("meta_two", write_manifest(m, "warn.json"))
    assert "differ from the meta profile's 126/21" in plan.root.config["parity_warnings"][0]


# --------------------------------------------------------------------------- TradingView exports


def write_tradingview_exports(directory: Path, days: int = 500) -> None:
    """Deterministic 24x7 daily chart exports (seeded geometric random walk: a test fixture only)."""
    rng = np.random.default_rng(7)
    start = int(pd.Timestamp("2021-01-01", tz="UTC").timestamp())
    vol = np.array([0.04, 0.05])  # daily; correlation 0.8
    cov = np.outer(vol, vol) * np.array([[1.0, 0.8], [0.8, 1.0]])
    shocks = rng.multivariate_normal([0.0005, 0.0007], cov, days)
    for j, (symbol, first) in enumerate((("BTCUSDT", 29000.0), ("ETHUSDT", 730.0))):
        close = first * np.exp(np.cumsum(shocks[:, j]))
        open_ = np.concatenate([[first], close[:-1]])
        wick = np.abs(rng.normal(0, 0.01, (2, days)))
        lines = ["time,open,high,low,close,Volume"]
        for i in range(days):
            hi, lo = max(open_[i], close[i]) * (1 + wick[0, i]), min(open_[i], close[i]) * (1 - wick[1, i])
            volume = rng.integers(1_000, 100_000)
            lines.append(f"{start + 86400 * i},{open_[i]:.2f},{hi:.2f},{lo:.2f},{close[i]:.2f},{volume}")
        write_lines(directory / f"BINANCE_{symbol}, 1D.csv", lines)


@pytest.mark.e2e
def test_crypto_tradingview_sleeve_keeps_its_24x7_calendar(write_manifest, tmp_path):
    exports = tmp_path / "tradingview"
    write_tradingview_exports(exports)
    m = json.loads((PROJECT / "config/manifest.json").read_text())
    assert m["profiles"]["crypto_tv"]["data"] == {"source": "tradingview", "path": "data/tradingview"}
    m["profiles"]["crypto_tv"]["data"]["path"] = str(exports)
    result = MetaPipeline("crypto_tv", manifest=write_manifest(m), run_id="tv", runs_root=tmp_path / "runs",
                          ray=False, profiles="equal_weight,min_variance,hrp").execute()
    run = result.run_dir
    returns = pd.read_parquet(run / "returns.parquet")
    assert len(returns) == 500 - 1 - 252
    steps = returns.index[1:] - returns.index[:-1]
    assert (steps == pd.Timedelta(days=1)).all(), "one row per calendar day, nothing dropped or padded"
    assert (returns.index.day_of_week >= 5).sum() > 60, "weekends are kept"
    health = json.loads((run / "health.json").read_text())["profiles"]
    assert all(h["windows_succeeded"] == h["windows_attempted"] == 13 for h in health.values())
    weights = json.loads((run / "weights_min_variance.json").read_text())
    assert {r["symbol"] for r in weights["weights"]} == {"BTCUSDT", "ETHUSDT"}
    assert json.loads((run / "sign_test.json").read_text())["passed"]


def test_a_sleeve_result_crosses_processes_as_arrow_and_is_what_its_file_stores(tmp_path):
    """A task's result travels as data (Arrow, no pandas pickle) and its returns are the artifact's, dtype for dtype."""
    from tradingview_scraper.layout import read_parquet, write_parquet

    config = {
        "data": {"source": "skfolio", "start": "2020-01-01", "end": "2021-12-31"},
        "universe": {"symbols": SYMBOLS},
        "selection": {"method": "all"},
        "backtest": {"train_window": 126, "test_window": 21},
    }
    result = compute_sleeve(config, ["equal_weight"], sleeve_id="x", profile="p")
    blob = pickle.dumps(result)
    assert b"pyarrow" in blob and b"pandas.core" not in blob
    back = pickle.loads(blob)
    pd.testing.assert_frame_equal(back.returns, result.returns, check_exact=True)
    assert (back.weights, back.health, back.sign_test) == (result.weights, result.health, result.sign_test)
    write_parquet(tmp_path / "returns.parquet", result.returns)
    stored = read_parquet(tmp_path / "returns.parquet")
    assert str(stored.index.dtype) == "datetime64[us]"
    pd.testing.assert_frame_equal(stored, result.returns, check_exact=True)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_a_sleeve_computed_per_risk_profile_merges_to_the_whole(direction):
    """The pipeline runs each risk profile as its own task: the merged parts equal one call."""
    from tradingview_scraper.sleeve import SleeveResult

    config = {
        "data": {"source": "skfolio", "start": "2019-01-01", "end": "2021-12-31"},
        "universe": {"symbols": SYMBOLS, "direction": direction},
        "selection": {"method": "all"},
        "backtest": {"train_window": 126, "test_window": 21, "commission": 0.001},
    }
    rps = ["equal_weight", "min_variance", "hrp"]
    whole = compute_sleeve(config, rps, sleeve_id="x", profile="p")
    # Each part crosses a process boundary as a task's result does: pickled, its returns as Arrow.
    parts = [pickle.loads(pickle.dumps(compute_sleeve(config, [rp], sleeve_id="x", profile="p"))) for rp in reversed(rps)]
    merged = SleeveResult.merge(parts)
    pd.testing.assert_frame_equal(merged.returns[rps], whole.returns, check_exact=True)  # every number
    assert (merged.weights, merged.health, merged.sign_test) == (whole.weights, whole.health, whole.sign_test)
    failing = copy.deepcopy(parts)
    failing[1].sign_test["passed"] = False
    assert SleeveResult.merge(failing).sign_test["passed"] is False
