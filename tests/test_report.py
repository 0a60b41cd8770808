"""The portfolio manager's report: metrics, anomalies, diversification, a real run, Snakemake's report, audit."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tradingview_scraper import audit, report
from tradingview_scraper.errors import DataError
from tradingview_scraper.layout import (
    read_json,
    read_parquet,
    read_parquet_metadata,
    run_node,
    write_parquet,
)
from tradingview_scraper.orchestration.pipeline import MetaPipeline
from tradingview_scraper.run import RunContext
from tradingview_scraper.steps import Parquet

from .conftest import PROJECT, SMALL_MANIFEST

PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]
SLEEVES = ["tech", "staples", "factors"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# small_run, demo_run: shared runs (conftest.py), run ids "rep" and "demo-local".


def _ctx(runs_root, run_id="rep") -> RunContext:
    config = {"profile": "meta_small", "run_id": run_id, "manifest": str(SMALL_MANIFEST), "runs_root": str(runs_root)}
    return RunContext.from_config(config, environ={})


def _node_data(ctx: RunContext) -> report.NodeData:
    """The report's data of the run's root, from its files as the ``report`` step receives them."""
    root, spec, profiles = ctx.node("."), ctx.spec("."), ctx.plan.risk_profiles
    meta = {p: root.file("meta_returns", profile=p) for p in profiles}
    meta = {p: Parquet(read_parquet(f), read_parquet_metadata(f)) for p, f in meta.items()}
    books = {k: {p: read_json(root.file(k, profile=p)) for p in profiles} for k in ("meta_weights", "flattened", "risk")}
    children = [ctx.spec(c) for c in spec.children]
    return report.node_data(spec, children, ctx.run_id, profiles, root, read_parquet(root.file("returns")), meta, **books)


def _returns(n=300, cols=("a", "b"), scale=0.01, seed=0, freq="B") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2021-01-04", periods=n, freq=freq, name="date")
    return pd.DataFrame(rng.normal(0.0003, scale, (n, len(cols))), index=index, columns=list(cols))


# --------------------------------------------------------------------------- pure functions


def test_performance_matches_hand_computation():
    r = _returns(cols=("x",))["x"]
    m = report.performance(r, 252)
    x = r.to_numpy()
    wealth = np.cumprod(1 + x)
    assert m["ann_return"] == pytest.approx(wealth[-1] ** (252 / len(x)) - 1, rel=1e-12)
    assert m["volatility"] == pytest.approx(x.std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * np.sqrt(252), rel=1e-12)
    downside = np.sqrt(np.sum(np.minimum(x, 0) ** 2) / (len(x) - 1))
    assert m["sortino"] == pytest.approx(x.mean() / downside * np.sqrt(252), rel=1e-12)
    mdd = np.min(wealth / np.maximum.accumulate(np.maximum(wealth, 1.0)) - 1)
    assert m["max_drawdown"] == pytest.approx(mdd, rel=1e-12) and m["max_drawdown"] < 0
    assert m["calmar"] == pytest.approx(m["ann_return"] / -mdd, rel=1e-12)
    assert (m["n_obs"], m["start"], m["end"]) == (300, "2021-01-04", r.index[-1].date().isoformat())


def test_calendar_picks_252_or_365_and_annualization_follows():
    weekdays = _returns(cols=("x",))
    daily = _returns(cols=("x",), freq="D")
    assert report.calendar(weekdays.index)[0] == 252 and "252" in report.calendar(weekdays.index)[1]
    assert report.calendar(daily.index)[0] == 365 and "24x7" in report.calendar(daily.index)[1]
    v252 = report.performance(daily["x"], 252)["volatility"]
    v365 = report.performance(daily["x"], 365)["volatility"]
    assert v365 / v252 == pytest.approx(np.sqrt(365 / 252), rel=1e-12)


def test_wealth_wiped_out_gives_no_geometric_return():
    r = pd.Series([0.1, -1.2, 0.05], index=pd.bdate_range("2021-01-04", periods=3))
    m = report.performance(r, 252)
    assert np.isnan(m["ann_return"]) and m["max_drawdown"] < -1.0


def test_effective_number_and_tournament():
    assert report.effective_number({"a": 0.5, "b": 0.5}) == pytest.approx(2.0)
    assert report.effective_number({"a": 0.6, "b": 0.3, "c": 0.1}) == pytest.approx(1 / 0.46)
    perf = {"a": {"sharpe": 0.5}, "b": {"sharpe": float("nan")}, "c": {"sharpe": 1.5}, "d": {"sharpe": -0.2}}
    for m in perf.values():
        m.update(ann_return=0.0, volatility=0.1, max_drawdown=-0.1)
    assert [t["profile"] for t in report.tournament(perf)] == ["c", "a", "d", "b"]
    assert [t["rank"] for t in report.tournament(perf)] == [1, 2, 3, 4]


def test_diversification_measures_of_independent_and_identical_sleeves():
    sleeves = _returns(n=20000, cols=("a", "b"), seed=1)
    meta = sleeves.mean(axis=1)
    d = report.diversification(meta, sleeves, {"a": 0.5, "b": 0.5}, 252)
    # two independent sleeves of equal volatility, equally weighted: two bets, ratio sqrt(2)
    assert d["independent_bets"] == pytest.approx(2.0, abs=0.02)
    assert d["diversification_ratio"] == pytest.approx(np.sqrt(2), abs=0.02)
    assert d["effective_sleeves"] == pytest.approx(2.0)
    x = sleeves.to_numpy()
    assert d["volatility"] == pytest.approx((x @ [0.5, 0.5]).std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert d["weighted_volatility"] == pytest.approx(0.5 * (x.std(axis=0, ddof=1)).sum() * np.sqrt(252), rel=1e-12)
    assert d["diversification_ratio"] == pytest.approx(d["weighted_volatility"] / d["volatility"], rel=1e-12)
    same = sleeves.assign(b=sleeves["a"] * 2.0)
    d = report.diversification(meta, same, {"a": 0.3, "b": 0.7}, 252)
    assert d["independent_bets"] == pytest.approx(1.0, abs=1e-9)
    assert d["diversification_ratio"] == pytest.approx(1.0, rel=1e-12)
    assert d["correlation"].loc["a", "b"] == pytest.approx(1.0)


def test_diversification_uses_only_the_meta_dates():
    sleeves = _returns(cols=("a", "b"))
    meta = sleeves.mean(axis=1).iloc[100:]
    d = report.diversification(meta, sleeves, {"a": 0.5, "b": 0.5}, 252)
    sleeves.iloc[:100] *= 50  # a wild early history the meta stream never saw
    assert report.diversification(meta, sleeves, {"a": 0.5, "b": 0.5}, 252)["sleeve_volatilities"] == d["sleeve_volatilities"]
    assert d["n_obs"] == 200
    with pytest.raises(DataError, match="share 0 dates"):
        report.diversification(meta, sleeves.iloc[:100], {"a": 0.5, "b": 0.5}, 252)


def _fat_tailed(n=2000, seed=0, cols=("x",)) -> pd.DataFrame:
    """Clean daily returns with the fat tails of real ones: Student t, 3 degrees of freedom."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-05", periods=n, name="date")
    return pd.DataFrame(0.0003 + 0.006 * rng.standard_t(3, (n, len(cols))), index=index, columns=list(cols))


def test_jump_cutoff_is_the_fat_tailed_null_at_the_stated_false_alarm_rate():
    from scipy.stats import t

    assert report.jump_cutoff(252) < report.jump_cutoff(2000) < report.jump_cutoff(10000)
    k = report.jump_cutoff(2000)
    scale = 1.4826 * t.ppf(0.75, report.TAIL_DF)
    assert 2 * t.sf(k * scale, report.TAIL_DF) * 2000 == pytest.approx(report.FALSE_ALARMS, rel=1e-9)
    # 200 clean fat-tailed series of 2,000 returns: false jumps stay near the stated rate (0.01 each)
    frame = _fat_tailed(cols=[f"s{i}" for i in range(200)], seed=11)
    found, _ = report.anomalies(frame)
    assert len(found) <= 6, found


def test_a_tenfold_price_spike_is_a_jump_and_nothing_else_is():
    frame = _fat_tailed(cols=("clean", "spiked"), seed=2)
    assert report.anomalies(frame)[0] == []
    day = frame.index[1000]
    frame.loc[day, "spiked"] = 0.25 * 9.0  # a quarter of the sleeve in a price recorded 10x too high
    found, thresholds = report.anomalies(frame)
    assert [(f["series"], f["check"], f["severity"], f["dates"]) for f in found] == [
        ("spiked", report.Check.JUMP, "warning", day.date().isoformat())
    ]
    assert "robust z +" in found[0]["detail"] and thresholds["spiked"]["jump_cutoff"] == pytest.approx(report.jump_cutoff(2000))


def test_impossible_values_and_broken_wealth_each_listed():
    frame = _returns(cols=("ok", "bust"))
    assert report.anomalies(frame)[0] == []
    frame.iloc[50, 1] = -1.5
    frame.iloc[80:83, 1] = np.nan
    found, _ = report.anomalies(frame)
    days = [d.date().isoformat() for d in frame.index[[50, 80, 82]]]
    assert {(f["series"], f["check"].value, f["dates"]) for f in found} == {
        ("bust", "return <= -100%", days[0]),
        ("bust", "non-finite return", f"{days[1]} .. {days[2]} (3 returns)"),
        ("bust", "broken wealth path", days[0]),
    }
    assert all(f["severity"] == "error" for f in found)
    assert "max drawdown -" in next(f for f in found if f["check"] == report.Check.BROKEN_WEALTH)["detail"]
    shuffled = _returns(cols=("x",)).iloc[[0, 2, 1, *range(3, 300)]]
    found, _ = report.anomalies(shuffled)
    assert [f["check"] for f in found] == [report.Check.BROKEN_WEALTH] and "not strictly increasing" in found[0]["detail"]


def test_stale_prices_threshold_follows_the_series_own_zero_rate():
    frame = _returns(n=1000, cols=("x",))
    frame.iloc[[100, 300, 500], 0] = 0.0  # isolated exact zeros happen (a holiday, a halted asset)
    assert report.anomalies(frame)[0] == []
    frame.iloc[600:610, 0] = 0.0
    found, thresholds = report.anomalies(frame)
    k = thresholds["x"]["stale_run"]
    assert k == report.stale_run(1000, 13 / 1000) and 2 <= k <= 10
    assert [(f["check"], f["dates"]) for f in found] == [
        (report.Check.STALE, f"{frame.index[600].date()} .. {frame.index[609].date()} (10 returns)")
    ]
    assert report.stale_run(1000, 0.0) == 2 and report.stale_run(1000, 0.5) == 17


def _synthetic_node(**weights_extra) -> report.NodeData:
    """A 24x7 node with one SHORT holding, an equal-weight fallback and degenerate bounds."""
    stream = _returns(n=200, cols=("hrp",), freq="D", seed=5)
    sleeves = _returns(n=260, cols=("btc", "eth"), freq="D", seed=6)
    weights = {
        "weights": {"btc": 0.5, "eth": 0.5},
        "bounds": {"min_weight": 0.5, "max_weight": 0.5},
        "fallback": True,
        "fallback_reason": "OptimizationError: solver failed",
        "degenerate_bounds": True,
        "walk_forward": {"train_window": 40, "test_window": 20, "windows_attempted": 10, "windows_succeeded": 9,
                         "windows_fallback": 1, "errors": ["window 3: solver failed"]},
        **weights_extra,
    }
    flat = {"gross": 1.0, "net": 0.4, "long": 0.7, "short": 0.3,
            "weights": [{"symbol": "BTC", "direction": "LONG", "weight": 0.7, "net_weight": 0.7, "sleeves": {"btc": 0.5, "eth": 0.2}},
                        {"symbol": "DOGE", "direction": "SHORT", "weight": 0.3, "net_weight": -0.3, "sleeves": {"eth": 0.3}}]}
    return report.NodeData("meta_crypto", "r1", ".", ["hrp"], stream, {"hrp": sleeves}, {"hrp": weights}, {"hrp": flat})


def test_document_shows_notes_calendar_and_short_holdings():
    data = _synthetic_node()
    a = report.analyse(data)
    assert a.periods_per_year == 365
    md = report.to_markdown(report.document(data, a))
    assert "365 periods per year (24x7 calendar" in md
    assert "FALLBACK to equal weight: OptimizationError: solver failed" in md
    assert "DEGENERATE BOUNDS" in md and "Walk-forward error: window 3: solver failed" in md
    assert "| DOGE | SHORT | 30.00% | -30.00% | eth 30.00% |" in md
    assert "| BTC | LONG | 70.00% | 70.00% | btc 50.00%, eth 20.00% |" in md
    assert "gross 100.00%, net 40.00%, long 70.00%, short 30.00%" in md


def test_html_escapes_and_embeds():
    blocks = [report.Heading(1, "T <x>"), report.Para("a & b", "fail"),
              report.Table(("h",), (("<td>",),), "l"), report.Image("fig", "Fig")]
    page = report.to_html(blocks, "t", {"fig": PNG_MAGIC})
    assert "T &lt;x&gt;" in page and "a &amp; b" in page and "&lt;td&gt;" in page
    assert 'src="data:image/png;base64,' + base64.b64encode(PNG_MAGIC).decode() + '"' in page
    with pytest.raises(KeyError):
        report.to_html(blocks, "t", {})


# --------------------------------------------------------------------------- a real run


def test_report_has_every_section_for_every_profile(small_run):
    md = (small_run / "report.md").read_text()
    for heading in ("# Meta-portfolio report: meta_small", "## Headline (out of sample)", "## Tournament",
                    "## Anomalies", "## Diversification", "## Figures"):
        assert heading + "\n" in md, heading
    assert "252 periods per year" in md
    chapters = md.split("\n## ")
    for p in PROFILES:
        assert re.search(rf"^\| {p} \| -?\d+\.\d\d% \| \d+\.\d\d% \|", md, re.M), f"headline row of {p}"
        assert f"### Sleeve correlation: {p}\n" in md
        chapter = next(c for c in chapters if c.startswith(f"{p}\n"))
        for part in ("### Sleeve allocation", "### Top holdings", "Exposure: gross", "In-sample weighted sum, NOT out of sample"):
            assert part in chapter, (p, part)
        for s in SLEEVES:
            assert f"| {s} |" in chapter
    for name in report.FIGURES:
        assert f"(report_assets/{name}.png)" in md


def test_headline_numbers_and_tournament_match_the_stream(small_run):
    stream = pd.read_parquet(small_run / "returns.parquet")
    md = (small_run / "report.md").read_text()
    sharpe = {}
    for p in PROFILES:
        x = stream[p].to_numpy()
        sharpe[p] = x.mean() / x.std(ddof=1) * np.sqrt(252)
        ann = np.prod(1 + x) ** (252 / len(x)) - 1
        row = re.search(rf"^\| {p} \| (.*)$", md, re.M).group(1).split(" | ")
        assert float(row[0].rstrip("%")) == pytest.approx(100 * ann, abs=0.006)
        assert float(row[2]) == pytest.approx(sharpe[p], abs=0.006)
    tour = md.split("## Tournament")[1].split("##")[0]
    ranked = re.findall(r"^\| (\d) \| (\w+) \|", tour, re.M)
    assert [p for _, p in ranked] == sorted(PROFILES, key=lambda p: -sharpe[p])


def test_in_sample_volatility_uses_the_sample_std_like_every_other_dispersion(small_run):
    # one convention (skfolio's ddof=1) for every standard deviation the report shows
    rec = json.loads((small_run / "meta" / "weights_hrp.json").read_text())
    sleeves = read_parquet(small_run / "meta" / "returns_hrp.parquet")
    r = sleeves.to_numpy() @ np.array([rec["weights"][c] for c in sleeves.columns])
    assert rec["in_sample_weighted_sum"]["std"] == pytest.approx(r.std(ddof=1), rel=1e-12)
    assert rec["in_sample_weighted_sum"]["std"] != pytest.approx(r.std(ddof=0), rel=1e-6)


def test_html_is_self_contained_with_every_figure(small_run):
    page = (small_run / "report.html").read_text()
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(report.FIGURES)
    node = run_node("rep", small_run.parent)
    for name, uri in zip(report.FIGURES, uris, strict=True):
        png = base64.b64decode(uri)
        assert png.startswith(PNG_MAGIC) and png == node.file("report_figure", asset=name).read_bytes()
    assert not re.search(r'(src|href)="(?!data:|#)', page), "the page must not load anything from outside"
    for p in PROFILES:
        assert f"<h2 id=\"s-{p.replace('_', '-')}\">{p}</h2>" in page
    for name in report.TABLES:
        table = node.file("report_table", asset=name).read_text()
        assert table.startswith("<!doctype html>") and "<table>" in table


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_figures_have_the_pixels_of_matplotlibs_own_constrained_savefig(small_run):
    # the report lays each figure out once and skips work that changes no pixel; matplotlib's
    # own path (a constrained-layout engine, savefig) must give the very same image
    ctx = _ctx(small_run.parent)
    data = _node_data(ctx)
    a = report.analyse(data)
    fast = report.figures(data, a)

    def savefig_png(fig):
        fig.set_layout_engine("constrained")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=report.DPI)
        return buf.getvalue()

    reference = report.figures(data, a, render=savefig_png)
    for name in report.FIGURES:
        assert Image.open(io.BytesIO(fast[name])).info["dpi"] == pytest.approx((report.DPI, report.DPI), abs=0.01)
        np.testing.assert_array_equal(_rgb(fast[name]), _rgb(reference[name]), err_msg=name)


def test_injected_extreme_return_shows_up_under_anomalies(small_run, tmp_path):
    copy = tmp_path / "rep"
    shutil.copytree(small_run, copy)
    path = copy / "meta" / "returns_hrp.parquet"
    frame = read_parquet(path)
    day = frame.index[len(frame) // 2]
    frame.loc[day, "tech"] = -1.5
    write_parquet(path, frame)
    ctx = _ctx(tmp_path)
    md = report.build_report(_node_data(ctx))["md"].decode()
    anomalies = md.split("## Anomalies")[1].split("\n## ")[0]
    d = day.date().isoformat()
    assert f"| hrp | sleeve | tech | return <= -100% | {d} | return -150.00% |" in anomalies
    assert f"| hrp | sleeve | tech | broken wealth path | {d} | compounded wealth <= 0 from here" in anomalies
    assert "**WARNING: 2 anomalies (2 errors, 0 warnings) in sleeve tech (hrp);" in md


def test_audit_verifies_the_run_and_rejects_a_tampered_copy(small_run, tmp_path, capsys):
    assert audit.main(["verify", str(small_run)]) == 0
    lines = (small_run / "audit.jsonl").read_text().splitlines()
    entries = [e for e in map(json.loads, lines) if e.get("stage") == "report"]
    recorded = {o["path"] for o in entries[-1]["outputs"]}
    assert {f"report_assets/{n}.png" for n in report.FIGURES} <= recorded
    copy = tmp_path / "tampered"
    shutil.copytree(small_run, copy)
    with open(copy / "report_assets" / "correlation.png", "ab") as fh:
        fh.write(b"\0")
    capsys.readouterr()
    assert audit.main(["verify", str(copy)]) == 1
    assert "artifact report_assets/correlation.png changed since stage report" in capsys.readouterr().out


@pytest.mark.e2e
def test_snakemake_report_registers_figures_and_tables(small_run, tmp_path):
    out = tmp_path / "snakemake_report.html"
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--config", "profile=meta_small",
           "run_id=rep", f"manifest={SMALL_MANIFEST}", f"runs_root={small_run.parent}", "--report", str(out)]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = out.read_text()
    for name in report.FIGURES:
        assert f"filename={name}.png;base64" in page, name
    for name in (*report.TABLES, "report"):
        assert f"{name}.html" in page, name
    assert "effective number of independent bets" in page  # a caption
    assert "Meta-portfolio run of profile" in page  # the workflow description


def test_figures_of_many_sleeves_name_the_largest_and_stay_bounded():
    """A meta node of hundreds of sleeves: figures show the largest by weight; sizes do not grow."""
    import io

    from PIL import Image

    rng = np.random.default_rng(3)
    names = [f"s{i:03d}" for i in range(300)]
    idx = pd.date_range("2019-01-01", periods=320, freq="B")
    returns = pd.DataFrame(rng.normal(0, 0.01, (len(idx), len(names))), index=idx, columns=names)
    w = rng.random(len(names))
    w = dict(zip(names, (w / w.sum()).tolist(), strict=True))

    def node(sleeves: list[str]) -> report.NodeData:
        weights = {"weights": {s: w[s] for s in sleeves}, "bounds": {"min_weight": 0.0, "max_weight": 1.0},
                   "fallback": False, "walk_forward": {"train_window": 60, "test_window": 20, "windows_attempted": 13,
                                                       "windows_succeeded": 13, "windows_fallback": 0, "errors": []}}
        flat = {"gross": 1.0, "net": 1.0, "long": 1.0, "short": 0.0,
                "weights": [{"symbol": "AAA", "direction": "LONG", "weight": 1.0, "net_weight": 1.0,
                             "sleeves": {s: w[s] for s in sleeves}}]}
        stream = pd.DataFrame({"hrp": returns[sleeves].mean(axis=1).iloc[60:]})
        return report.NodeData("big", "r", ".", ["hrp"], stream, {"hrp": returns[sleeves]}, {"hrp": weights}, {"hrp": flat})

    largest = report.largest_sleeves({"hrp": w}, names)
    assert len(largest) == report.MAX_FIGURE_SLEEVES
    assert set(largest) == set(sorted(names, key=w.get)[-report.MAX_FIGURE_SLEEVES:])
    assert largest == sorted(largest)  # in the sleeves' order
    assert report.largest_sleeves({"hrp": w}, names[:5]) == names[:5]

    every, top = node(names), node(largest)
    many, few = (report.figures(d, report.analyse(d)) for d in (every, top))
    for name in ("allocation", "correlation", "sleeves"):
        assert Image.open(io.BytesIO(many[name])).size == Image.open(io.BytesIO(few[name])).size, name


# --------------------------------------------------------------------------- anomalies on real runs


@pytest.mark.e2e
def test_the_shipped_demo_on_clean_data_raises_no_banner(demo_run):
    md = (demo_run / "report.md").read_text()
    anomalies = md.split("## Anomalies")[1]
    assert "WARNING" not in md and "None found." in anomalies
    assert "| equal_weight | meta |" in anomalies and "| hrp | tech |" in anomalies  # thresholds stated per series
    assert "FAIL" not in md and "PASS" not in md  # diversification is shown, not judged
    assert "diversification ratio" in md.split("## Diversification")[1]


@pytest.mark.e2e
def test_a_tenfold_spike_in_a_user_price_table_is_flagged_and_named(tmp_path, small_manifest_dict, write_manifest):
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().loc["2019-01-01":"2021-12-31", ["KO", "PEP", "PG"]]
    day = prices.index[600]  # out of sample for the sleeve (train 126) and the meta level (126 more)
    prices.loc[day, "PEP"] *= 10.0
    table = tmp_path / "prices.csv"
    prices.rename_axis("date").to_csv(table)
    manifest = small_manifest_dict
    manifest["profiles"]["staples_user"] = {"data": {"source": "table", "path": str(table)},
                                            "universe": {"symbols": ["KO", "PEP", "PG"]}}
    manifest["profiles"]["meta_spike"] = {
        "sleeves": [{"id": "tech", "profile": "tech"}, {"id": "staples", "profile": "staples_user"},
                    {"id": "factors", "profile": "factors"}],
        "profiles": ["equal_weight", "hrp"],
    }
    path = write_manifest(manifest)
    result = MetaPipeline("meta_spike", manifest=path, run_id="spike", runs_root=tmp_path / "runs", ray=False).execute()
    md = (result.run_dir / "report.md").read_text()
    d = day.date().isoformat()
    banner = next(line for line in md.splitlines() if line.startswith("**WARNING"))
    assert "sleeve staples (equal_weight, hrp)" in banner and "sleeve tech" not in banner and "sleeve factors" not in banner
    anomalies = md.split("## Anomalies")[1]
    for p in ("equal_weight", "hrp"):
        assert re.search(rf"^\| {p} \| sleeve \| staples \| jump \| {d} \| return \+\d+\.\d\d%: robust z \+\d+, beyond", anomalies, re.M), p
    assert not re.search(r"^\| \w+ \| sleeve \| (tech|factors) \|.*\| jump \|", anomalies, re.M)


# --------------------------------------------------------------------------- the report store (issue 25)


def test_the_figures_key_follows_what_the_figures_show_not_the_run_id(small_run):
    import dataclasses

    ctx = _ctx(small_run.parent)
    data = _node_data(ctx)
    key = report.figures_key(data)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    renamed = dataclasses.replace(data, run_id="other", risk={p: {**r, "run_id": "other"} for p, r in data.risk.items()})
    assert report.figures_key(renamed) == key
    assert report.figures(data, report.analyse(data)) == report.figures(renamed, report.analyse(renamed))
    stream = data.stream.copy()
    stream.iloc[-1, 0] += 1e-12
    sleeves = {**data.sleeves, "hrp": data.sleeves["hrp"].rename(columns={"tech": "tech2"})}
    weights = json.loads(json.dumps(data.weights))
    weights["hrp"]["bounds"]["max_weight"] = 0.99
    for name, changed in (("stream", stream), ("sleeves", sleeves), ("weights", weights)):
        assert report.figures_key(dataclasses.replace(data, **{name: changed})) != key, name


def test_a_report_drawn_again_takes_its_figures_from_the_store_byte_for_byte(small_run, tmp_path):
    from tradingview_scraper.report import stored_figures

    root = tmp_path / "runs"
    shutil.copytree(small_run.parent, root, symlinks=True)
    run_dir = root / small_run.name
    outputs = [run_dir / "report.md", run_dir / "report.html", *sorted((run_dir / "report_assets").iterdir())]
    before = {p: p.read_bytes() for p in outputs}
    for p in outputs:
        p.unlink()
    MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="rep", runs_root=root, ray=False).execute()
    assert {p: p.read_bytes() for p in outputs} == before
    reports = [e for e in map(json.loads, (run_dir / "audit.jsonl").read_text().splitlines()) if e.get("stage") == "report"]
    assert [e["params"]["figures"] for e in reports] == ["drawn", "reused"]
    # An entry whose PNG no longer matches its index is not used: the figures are drawn again.
    [index] = list((root / ".store" / "report").glob("*/*/index.json"))
    png = index.parent / "cumulative.png"
    assert stored_figures(root / ".store" / "report", index.parent.name)["cumulative"] == png.read_bytes()
    png.write_bytes(png.read_bytes() + b"x")
    assert stored_figures(root / ".store" / "report", index.parent.name) is None
