"""Real runs on data that would make a silent wrong book: each case is named on the console and at the top of the report.

One shared run holds, under a ``warn`` policy, a dying symbol, a halted stock, a SHORT sleeve
wiped out by a spike and daily bars stamped at 01:00: it completes, names each (symbol, file,
dates) on stderr and above the report's first section, and its risk stage falls back on the
halted and the wiped-out positions, naming them. Two more runs show the default policy refusing
the dying symbol and the halted stock in one line, before any fit.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.orchestration.cli import main

from .helpers import WINDOWS, prices, table_manifest, write_tradingview_export

pytestmark = pytest.mark.e2e

PROG = "run_meta_pipeline.py"
N = 200


def _data(data_dir: Path) -> dict[str, object]:
    """The four sleeves' files; returns the dates each case is named with."""
    a = prices(["AAA", "BBB", "CCC"], n=N).astype(object)
    a.iloc[N - 15 :, 0] = ""  # AAA dies 15 dates before the others
    a.to_csv(data_dir / "a.csv")
    b = prices(["DDD", "EEE", "FFF"], n=N, seed=1)
    b.iloc[N - 60 :, 0] = b.iloc[N - 61, 0]  # DDD halted over the last 60 dates
    b.to_csv(data_dir / "b.csv")
    c = prices(["GGG", "HHH"], n=N, seed=2)
    c.iloc[N - 30 :, 0] *= 3.0  # GGG triples in one day: the SHORT sleeve holding it is wiped out
    c.to_csv(data_dir / "c.csv")
    days = pd.bdate_range("2020-01-01", periods=N)
    tv = data_dir / "tv"
    # ONE at 01:00, TWO at midnight and 01:00 by turns: both land on their own day here, but
    # the day of a bar near midnight depends on the time zone it was written in.
    mixed = days + pd.to_timedelta(np.arange(N) % 2, unit="h")
    write_tradingview_export(tv, "ONE", days + pd.Timedelta(hours=1), prices(["X"], n=N, seed=3)["X"].to_numpy())
    write_tradingview_export(tv, "TWO", mixed, prices(["X"], n=N, seed=4)["X"].to_numpy())
    index = prices(["X"], n=N).index
    return {
        "dies": index[N - 16].date().isoformat(),
        "halted_from": index[N - 61].date().isoformat(),
        "spike": index[N - 30].date().isoformat(),
        "tv": tv,
    }


def _manifest(data_dir: Path, policy: dict | None) -> dict:
    m = table_manifest(data_dir, tradingview=True)
    m["profiles"]["ta"]["universe"]["symbols"] = ["AAA", "BBB", "CCC"]
    m["profiles"]["tb"]["universe"]["symbols"] = ["DDD", "EEE", "FFF"]
    m["profiles"]["tc"] = {
        "data": {"source": "table", "path": str(data_dir / "c.csv")},
        "universe": {"symbols": ["GGG", "HHH"], "direction": "SHORT"},
        "backtest": dict(WINDOWS),
    }
    m["profiles"]["meta_tables"]["sleeves"] = [
        {"id": "a", "profile": "ta"}, {"id": "b", "profile": "tb"}, {"id": "c", "profile": "tc"},
        {"id": "d", "profile": "tv"},
    ]  # fmt: skip
    if policy is not None:
        m["defaults"]["health"] = {"data_quality": policy}
    return m


def _run(tmp: Path, policy: dict | None, run_id: str) -> tuple[int, str, str, dict]:
    data = tmp / "data"
    data.mkdir()
    dates = _data(data)
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(_manifest(data, policy)))
    out, err = io.StringIO(), io.StringIO()
    argv = ["--manifest", str(manifest), "--runs-root", str(tmp / "runs"), "--run-id", run_id, "--no-ray"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--profile", "meta_tables", *argv], prog=PROG, require_meta=True)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue(), {**dates, "data": data, "run": tmp / "runs" / run_id}


@pytest.fixture(scope="module")
def warned(tmp_path_factory):
    """The shared run: every case let through (``warn``)."""
    policy = {"ragged_history": "warn", "halted": "warn"}
    return _run(tmp_path_factory.mktemp("dq-warn"), policy, "warned")


def test_the_run_completes_and_names_every_case_on_the_console(warned):
    code, _, err, d = warned
    assert code == 0, err
    data = d["data"]
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    expected = [
        rf"sleeve 'a': data ragged_history: symbol 'AAA' \({data}/a\.csv\) has no price after {d['dies']} "
        rf"while the other symbols run to \S+ \(15 more dates",
        rf"sleeve 'b': data halted: symbol 'DDD' \({data}/b\.csv\) is constant at \S+ from {d['halted_from']} "
        r"to \S+ \(60 unchanged periods",
        rf"sleeve 'c': data price_jumps: symbol 'GGG' \({data}/c\.csv\) jumps from \S+ on \S+ to \S+ on "
        rf"{d['spike']} \(x3\.\d*\): a rise of 100% or more wipes out a SHORT position",
        rf"sleeve 'd': data shifted_timestamps: symbol 'ONE' \({d['tv']}/BINANCE_ONE, 1D\.csv\) has {N} of {N} "
        r"daily bars stamped at 01:00 \(2020-01-01 01:00:00 \.\. ",
        rf"sleeve 'd': data shifted_timestamps: symbol 'TWO' \({d['tv']}/BINANCE_TWO, 1D\.csv\) has {N // 2} of {N} "
        rf"daily bars stamped at 01:00, {N // 2} at midnight",
        r"risk \. \((equal_weight|min_variance)\): DDD LONG \(sleeve 'b'\): its price is constant from \S+ to \S+ "
        r"\(zero variance over the window",
        r"risk \. \((equal_weight|min_variance)\): GGG SHORT \(sleeve 'c'\): its wealth path reaches 0 on "
        rf"{d['spike']}",
    ]
    for needle in expected:
        assert any(re.search(needle, line) for line in lines), f"{needle!r} not in {lines}"


def test_each_case_is_at_the_top_of_the_report_and_in_the_artifacts(warned):
    code, _, err, d = warned
    assert code == 0, err
    report = (d["run"] / "report.md").read_text()
    top = report[: report.index("\n## ")]  # everything above the first section
    for needle in (
        f"DATA WARNING: sleeve 'a', ragged_history ({d['dies']} .. ", "symbol 'AAA' (",
        f"DATA WARNING: sleeve 'b', halted ({d['halted_from']} .. ", "symbol 'DDD' (",
        "DATA WARNING: sleeve 'c', price_jumps (", f"on {d['spike']} (x3",
        "DATA WARNING: sleeve 'd', shifted_timestamps (", "symbol 'ONE' (", "symbol 'TWO' (",
        "RISK FALLBACK (equal_weight, min_variance): DDD LONG (sleeve 'b')",
        "RISK FALLBACK (equal_weight, min_variance): GGG SHORT (sleeve 'c')",
    ):  # fmt: skip
        assert needle in top, f"{needle!r} not at the top of the report"
    health = json.loads((d["run"] / "sleeves" / "b" / "health.json").read_text())
    assert [(f["check"], f["symbol"], f["file"]) for f in health["data_quality"]] == [
        ("halted", "DDD", str(d["data"] / "b.csv"))
    ]
    for p in ("equal_weight", "min_variance"):
        risk = json.loads((d["run"] / f"risk_{p}.json").read_text())
        assert {(f["symbol"], f["direction"], f["sleeve"]) for f in risk["fallbacks"]} == {
            ("DDD", "LONG", "b"), ("GGG", "SHORT", "c"),
        }  # fmt: skip
        rows = {(r["symbol"], r["direction"]): r for r in risk["assets"]["rows"]}
        assert rows[("DDD", "LONG")]["contribution"] == 0.0
        total = sum(r["contribution"] for r in rows.values())
        assert total == pytest.approx(risk["assets"]["volatility"], rel=1e-10)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("dying", r"sleeve 'a' failed: DataError: data refused by health\.data_quality\.ragged_history: symbol 'AAA' "
                  r"\(\S+/a\.csv\) has no price after {dies} .*the inner join would end the whole sleeve on {dies}; "
                  r'set health\.data_quality\.ragged_history to "warn" to accept it$'),
        ("halted", r"sleeve 'b' failed: DataError: data refused by health\.data_quality\.halted: symbol 'DDD' "
                   r"\(\S+/b\.csv\) is constant at \S+ from {halted_from} to \S+ \(60 unchanged periods.*takes weight "
                   r"in today's book; set health\.data_quality\.halted to \"warn\" to accept it$"),
    ],
)  # fmt: skip
def test_the_default_policy_refuses_in_one_line_before_any_fit(tmp_path, case, needle):
    policy = {"halted": "off"} if case == "dying" else {"ragged_history": "off"}
    code, _, err, d = _run(tmp_path, policy, "refused")
    assert code != 0
    lines = err.strip().splitlines()
    refusal = [line for line in lines if not line.startswith("warning: ")]
    assert len(refusal) == 1, err
    assert re.search(needle.format(**d), refusal[0]), refusal[0]
    sleeve = d["run"] / "sleeves" / ("a" if case == "dying" else "b")
    assert not (sleeve / "returns.parquet").exists() and not (d["run"] / "report.md").exists()
