"""Tests of tradingview_scraper.data: skfolio datasets, price tables and TradingView exports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import numpy.testing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tradingview_scraper import data as data_mod
from tradingview_scraper.data import load_prices, periods_per_year, prices_to_returns
from tradingview_scraper.errors import ConfigError, DataError

DATES = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table(path: Path, **extra) -> dict:
    return {"source": "table", "path": str(path), **extra}


def tv(path: Path, **extra) -> dict:
    return {"source": "tradingview", "path": str(path), **extra}


def check_frame(prices: pd.DataFrame, symbols: list[str]) -> None:
    assert list(prices.columns) == symbols
    assert isinstance(prices.index, pd.DatetimeIndex)
    assert prices.index.name == "date"
    assert prices.index.tz is None
    assert prices.index.is_monotonic_increasing and prices.index.is_unique
    assert (prices.dtypes == "float64").all()
    assert np.isfinite(prices.to_numpy()).all() and (prices.to_numpy() > 0).all()


# --------------------------------------------------------------------------- module


def test_modules_import_only_pandas_numpy_stdlib_at_top_level():
    modules = sorted(Path(data_mod.__file__).parent.glob("*.py"))
    assert len(modules) > 1
    roots = set()
    for module in modules:
        for node in ast.parse(module.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
    assert roots <= {
        "__future__",
        "re",
        "warnings",
        "collections",
        "enum",
        "functools",
        "pathlib",
        "typing",
        "numpy",
        "pandas",
    }


# --------------------------------------------------------------------------- skfolio


def test_skfolio_sp500_three_symbols_with_start_end():
    prices = load_prices(
        {"source": "skfolio", "dataset": "sp500", "start": "2020-01-01", "end": "2020-12-31"},
        ["MSFT", "AAPL", "JPM"],
    )
    check_frame(prices, ["MSFT", "AAPL", "JPM"])
    assert prices.index[0] == pd.Timestamp("2020-01-02")
    assert prices.index[-1] == pd.Timestamp("2020-12-31")
    assert prices.shape == (253, 3)
    assert periods_per_year(prices.index) == 252


def test_skfolio_factors_default_source_all_symbols():
    prices = load_prices({"dataset": "factors"})
    check_frame(prices, ["MTUM", "QUAL", "SIZE", "USMV", "VLUE"])
    assert prices.shape == (2264, 5)
    assert prices.index[0].year == 2014 and prices.index[-1].year == 2022


@pytest.mark.parametrize("dataset", ["ftse100", "sp500_index", "nope"])
def test_skfolio_unknown_dataset_is_config_error(dataset):
    with pytest.raises(ConfigError, match=rf"'{dataset}'.*valid datasets are 'sp500', 'factors'"):
        load_prices({"source": "skfolio", "dataset": dataset})


def test_skfolio_unknown_symbol_lists_available():
    with pytest.raises(DataError, match=r"'NOPE' not found; available: 'MTUM', 'QUAL'"):
        load_prices({"dataset": "factors"}, ["MTUM", "NOPE"])


# --------------------------------------------------------------------------- config


def test_unknown_source_and_layout_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'csv'.*'skfolio', 'table', 'tradingview'"):
        load_prices({"source": "csv"})
    f = write(tmp_path / "p.csv", "date,A\n2024-01-02,1\n")
    with pytest.raises(ConfigError, match=r"'diagonal'.*'wide', 'long'"):
        load_prices(table(f, layout="diagonal"))
    with pytest.raises(ConfigError, match=r"data.path is required"):
        load_prices({"source": "table"})
    with pytest.raises(ConfigError, match=r"data.start 'soon'"):
        load_prices(table(f, start="soon"))


# --------------------------------------------------------------------------- tables


def test_wide_csv_empty_cell_is_missing_observation_inner_join(tmp_path):
    f = write(
        tmp_path / "wide.csv",
        "date,AAA,BBB,CCC\n"
        "2024-01-02,10,20,30\n"
        "2024-01-03,11,,31\n"
        "2024-01-04,12,22,32\n"
        "2024-01-05,,23,33\n",
    )
    prices = load_prices(table(f), ["CCC", "AAA", "BBB"])
    check_frame(prices, ["CCC", "AAA", "BBB"])
    assert list(prices.index) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-04")]
    npt.assert_allclose(prices.to_numpy(), [[30, 10, 20], [32, 12, 22]])
    # one symbol keeps its own full calendar
    npt.assert_allclose(load_prices(table(f), ["CCC"])["CCC"].to_numpy(), [30, 31, 32, 33])


def test_wide_csv_relative_path_first_column_dates_and_trim(tmp_path):
    write(tmp_path / "w.csv", "Day,X\n2024-01-02,1\n2024-01-03,2\n2024-01-04,4\n")
    prices = load_prices(
        {"source": "table", "path": "w.csv", "start": "2024-01-03", "end": "2024-01-04"},
        base_dir=tmp_path,
    )
    check_frame(prices, ["X"])
    npt.assert_allclose(prices["X"].to_numpy(), [2.0, 4.0])


def test_wide_parquet_index_and_nulls(tmp_path):
    frame = pd.DataFrame(
        {"A": [1.0, 2.0, np.nan, 4.0], "B": [5.0, 6.0, 7.0, 8.0]},
        index=pd.DatetimeIndex(DATES, name="Date"),
    )
    f = tmp_path / "wide.parquet"
    frame.to_parquet(f)
    prices = load_prices(table(f))
    check_frame(prices, ["A", "B"])
    assert list(prices.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03", "2024-01-05"]
    npt.assert_allclose(prices.to_numpy(), [[1, 5], [2, 6], [4, 8]])


def test_long_csv_and_long_parquet(tmp_path):
    rows = [
        (d, s, p)
        for d, (a, b) in zip(DATES, [(1, 9), (2, 8), (3, 7), (4, 6)], strict=True)
        for s, p in (("AAA", a), ("BBB", b))
    ]
    long = pd.DataFrame(rows, columns=["Date", "Symbol", "Close"]).drop(index=[3])  # BBB 01-03
    csv = tmp_path / "long.csv"
    long.to_csv(csv, index=False)
    pqt = tmp_path / "long.pq"
    long.assign(Date=pd.to_datetime(long["Date"])).to_parquet(pqt, index=False)
    for f in (csv, pqt):
        prices = load_prices(table(f))
        check_frame(prices, ["AAA", "BBB"])
        assert len(prices) == 3 and pd.Timestamp("2024-01-03") not in prices.index
        npt.assert_allclose(prices.to_numpy(), [[1, 9], [3, 7], [4, 6]])


def test_forced_layout_long_reports_missing_columns(tmp_path):
    f = write(tmp_path / "t.csv", "date,ticker,px\n2024-01-02,A,1\n")
    with pytest.raises(
        DataError, match=r"t\.csv.*missing 'symbol', 'close'.*'date', 'ticker', 'px'"
    ):
        load_prices(table(f, layout="long"))


# --------------------------------------------------------------------------- TradingView


def tv_csv(times: list, closes: list, volume: bool = True) -> str:
    head = "time,open,high,low,close" + (",Volume" if volume else "")
    lines = [
        f"{t},1,1,1,{c}" + (",100" if volume else "") for t, c in zip(times, closes, strict=True)
    ]
    return "\n".join([head, *lines]) + "\n"


def unix(day: str, hour: int = 0) -> int:
    return int(pd.Timestamp(day).timestamp()) + 3600 * hour


def test_tradingview_unix_and_iso_times_file_name_symbols(tmp_path):
    write(tmp_path / "NASDAQ_AAPL, 1D.csv", tv_csv([unix(d, 14) for d in DATES], [1, 2, 3, 4]))
    iso = [f"{d}T00:00:00-05:00" for d in DATES]
    write(tmp_path / "MSFT.csv", tv_csv(iso, [5, 6, 7, 8], volume=False))
    prices = load_prices(tv(tmp_path))
    check_frame(prices, ["AAPL", "MSFT"])
    assert list(prices.index) == list(pd.DatetimeIndex(DATES))  # normalized to dates
    npt.assert_allclose(prices.to_numpy(), [[1, 5], [2, 6], [3, 7], [4, 8]])


def test_tradingview_files_mapping(tmp_path):
    write(tmp_path / "export_1.csv", tv_csv(DATES, [1, 2, 3, 4]))
    prices = load_prices(tv(tmp_path, files={"ETH": "export_1.csv"}))
    check_frame(prices, ["ETH"])


def test_crypto_keeps_weekends_and_joins_equity_on_trading_days(tmp_path):
    days = pd.date_range("2024-01-01", "2024-01-14", freq="D")  # 24x7
    write(
        tmp_path / "BINANCE_BTCUSDT, 1D.csv",
        tv_csv([unix(str(d.date())) for d in days], list(range(100, 114))),
    )
    btc = load_prices(tv(tmp_path), ["BTCUSDT"])
    check_frame(btc, ["BTCUSDT"])
    assert len(btc) == 14 and (btc.index.day_of_week >= 5).sum() == 4
    assert periods_per_year(btc.index) == 365
    bdays = pd.bdate_range("2024-01-01", "2024-01-14")
    write(tmp_path / "NYSE_SPY, 1D.csv", tv_csv([f"{d.date()}" for d in bdays], [1.0] * len(bdays)))
    both = load_prices(tv(tmp_path), ["BTCUSDT", "SPY"])
    check_frame(both, ["BTCUSDT", "SPY"])
    assert list(both.index) == list(bdays)
    assert periods_per_year(both.index) == 252
    npt.assert_allclose(both["BTCUSDT"].to_numpy(), btc.loc[bdays, "BTCUSDT"].to_numpy())


# --------------------------------------------------------------------------- bad files


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nope\.csv"):
        load_prices(table(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match=r"not found: .*no_dir"):
        load_prices(tv(tmp_path / "no_dir"))
    with pytest.raises(DataError, match=r"'X'.*not found: .*x\.csv"):
        load_prices(tv(tmp_path, files={"X": "x.csv"}))


def test_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"empty\.csv: empty file"):
        load_prices(table(write(tmp_path / "empty.csv", "")))
    with pytest.raises(DataError, match=r"head\.csv: no data rows"):
        load_prices(table(write(tmp_path / "head.csv", "date,A\n")))
    pq.write_table(
        pa.table({"date": pa.array([], pa.string()), "A": pa.array([], pa.float64())}),
        tmp_path / "empty.parquet",
    )
    with pytest.raises(DataError, match=r"empty\.parquet: no data rows"):
        load_prices(table(tmp_path / "empty.parquet"))


def test_missing_column_in_tradingview_export(tmp_path):
    write(tmp_path / "BINANCE_ETHUSDT, 1D.csv", "time,open,high,low\n1704153600,1,1,1\n")
    with pytest.raises(
        DataError,
        match=r"ETHUSDT, 1D\.csv: symbol 'ETHUSDT'.*missing 'close'.*found 'time', 'open'",
    ):
        load_prices(tv(tmp_path))


def test_unknown_symbol_names_it_and_truncates_available(tmp_path):
    names = [f"S{i:02d}" for i in range(15)]
    f = write(
        tmp_path / "many.csv",
        "date," + ",".join(names) + "\n2024-01-02," + ",".join(["1"] * 15) + "\n",
    )
    with pytest.raises(
        DataError,
        match=r"many\.csv: symbol 'ZZZ' not found; available: 'S00'.*"
        r"'S09', \.\.\. \(5 more\)",
    ):
        load_prices(table(f), ["S01", "ZZZ"])


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("abc", "is not a number"),
        ("nan", "is NaN"),
        ("NaN", "is NaN"),
        ("inf", "is infinite"),
        ("-inf", "is infinite"),
        ("0", r"is not > 0"),
        ("-2.5", r"is not > 0"),
    ],
)
def test_bad_price_in_wide_csv(tmp_path, cell, why):
    f = write(tmp_path / "bad.csv", f"date,A,B\n2024-01-02,1,2\n2024-01-03,3,{cell}\n")
    message = rf"bad\.csv: symbol 'B', line 3 \(2024-01-03\): price '{re.escape(cell)}' {why}"
    with pytest.raises(DataError, match=message):
        load_prices(table(f))


def test_bad_price_in_parquet_explicit_nan_and_tradingview(tmp_path):
    t = pa.table(
        {
            "date": pa.array(DATES[:2]),
            "A": pa.array([1.0, float("nan")], pa.float64(), from_pandas=False),
        }
    )
    pq.write_table(t, tmp_path / "nan.parquet")
    with pytest.raises(
        DataError, match=r"nan\.parquet: symbol 'A', row 2 \(2024-01-03\): price nan"
    ):
        load_prices(table(tmp_path / "nan.parquet"))
    write(tmp_path / "BINANCE_BTCUSDT, 1D.csv", tv_csv(DATES[:2], [1, -3]))
    with pytest.raises(
        DataError, match=r"BTCUSDT, 1D\.csv: symbol 'BTCUSDT', line 3 .*'-3' is not > 0"
    ):
        load_prices(tv(tmp_path))


def test_empty_close_in_tradingview_is_an_error(tmp_path):
    write(tmp_path / "X.csv", "time,open,high,low,close\n2024-01-02,1,1,1,\n")
    with pytest.raises(DataError, match=r"X\.csv: symbol 'X', line 2 \(2024-01-02\): empty price"):
        load_prices(tv(tmp_path))


def test_duplicate_date(tmp_path):
    f = write(tmp_path / "dup.csv", "date,A\n2024-01-02,1\n2024-01-03,2\n2024-01-03,3\n")
    with pytest.raises(DataError, match=r"dup\.csv: symbol 'A', line 4: duplicate date 2024-01-03"):
        load_prices(table(f))
    long = write(
        tmp_path / "dup_long.csv",
        "date,symbol,close\n2024-01-02,A,1\n2024-01-02,B,1\n2024-01-02,B,2\n",
    )
    with pytest.raises(DataError, match=r"dup_long\.csv: symbol 'B', line 4: duplicate date"):
        load_prices(table(long))


def test_unsorted_dates_are_an_error_not_sorted(tmp_path):
    write(
        tmp_path / "NYSE_KO, 1D.csv",
        tv_csv([unix("2024-01-03"), unix("2024-01-02"), unix("2024-01-04")], [1, 2, 3]),
    )
    with pytest.raises(
        DataError,
        match=r"KO, 1D\.csv: symbol 'KO', line 3: date 2024-01-02 comes "
        r"after 2024-01-03.*sorted",
    ):
        load_prices(tv(tmp_path))


def test_bad_date(tmp_path):
    f = write(tmp_path / "d.csv", "date,A\n2024-01-02,1\nyesterday,2\n")
    with pytest.raises(DataError, match=r"d\.csv: line 3: cannot parse 'date' value 'yesterday'"):
        load_prices(table(f))


def test_no_overlap_names_symbols_and_ranges(tmp_path):
    f = write(
        tmp_path / "gap.csv",
        "date,A,B\n2024-01-02,1,\n2024-01-03,2,\n2024-01-04,,5\n2024-01-05,,6\n",
    )
    with pytest.raises(
        DataError,
        match=r"no date .*'A', 'B'.*A: 2024-01-02\.\.2024-01-03.*"
        r"B: 2024-01-04\.\.2024-01-05",
    ):
        load_prices(table(f))
    f2 = write(tmp_path / "ok.csv", "date,A\n2024-01-02,1\n")
    with pytest.raises(DataError, match=r"within 2025-01-01\.\.\+inf.*'A'"):
        load_prices(table(f2, start="2025-01-01"))


# --------------------------------------------------------------------------- helpers


def test_prices_to_returns_and_periods_per_year():
    prices = pd.DataFrame(
        {"A": [100.0, 110.0, 99.0], "B": [10.0, 10.0, 12.5]},
        index=pd.DatetimeIndex(DATES[:3], name="date"),
    )
    returns = prices_to_returns(prices)
    assert list(returns.index) == list(prices.index[1:])
    npt.assert_allclose(returns.to_numpy(), [[0.1, 0.0], [-0.1, 0.25]])
    assert periods_per_year(pd.DatetimeIndex(["2024-01-05", "2024-01-06"])) == 365
    assert periods_per_year(pd.DatetimeIndex(DATES)) == 252
