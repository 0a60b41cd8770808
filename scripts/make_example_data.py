#!/usr/bin/env python
"""Write the SYNTHETIC example TradingView chart exports under data/tradingview/ (deterministic).

The prices are random walks, not market data: they exist so that the shipped profiles
`crypto_tv` (a 24x7 crypto pair), `equity_tv` (three weekday equities) and the
mixed-calendar meta profile `meta_mixed_tv` run out of the box. Rerunning the script
rewrites byte-identical files (Python's `random` with a fixed seed, fixed decimals).

    python scripts/make_example_data.py [--out data/tradingview]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
from pathlib import Path

START, END = dt.date(2021, 1, 1), dt.date(2023, 12, 29)
#: Equity market holidays of the synthetic calendar (month, day), when they fall on a weekday.
HOLIDAYS = ((1, 1), (7, 4), (12, 25))

#: symbol -> (start price, daily drift, daily volatility, loading on the common factor)
CRYPTO = {"BTCUSDT": (29000.0, 0.0010, 0.035, 0.85), "ETHUSDT": (730.0, 0.0012, 0.045, 0.80)}
EQUITY = {"SYNA": (100.0, 0.0004, 0.016, 0.55), "SYNB": (50.0, 0.0003, 0.012, 0.45), "SYNC": (75.0, 0.0005, 0.020, 0.60)}

HEADER = "time,open,high,low,close,Volume\n"


def _days(weekdays_only: bool) -> list[dt.date]:
    out, day = [], START
    while day <= END:
        if not weekdays_only or (day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS):
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def _bars(rng: random.Random, days: list[dt.date], assets: dict, hour: int, minute: int) -> dict[str, str]:
    """One chart-export CSV text per symbol: a one-factor random walk of daily bars."""
    lines = {sym: [HEADER] for sym in assets}
    close = {sym: spec[0] for sym, spec in assets.items()}
    for day in days:
        common = rng.gauss(0.0, 1.0)
        stamp = int(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC).timestamp())
        for sym, (_, drift, vol, beta) in assets.items():
            shock = beta * common + math.sqrt(1.0 - beta * beta) * rng.gauss(0.0, 1.0)
            open_ = close[sym] * (1.0 + rng.gauss(0.0, vol / 10.0))
            new = close[sym] * math.exp(drift - 0.5 * vol * vol + vol * shock)
            high = max(open_, new) * (1.0 + abs(rng.gauss(0.0, vol / 3.0)))
            low = min(open_, new) * (1.0 - abs(rng.gauss(0.0, vol / 3.0)))
            volume = rng.uniform(1e3, 1e4)
            close[sym] = new
            lines[sym].append(f"{stamp},{open_:.2f},{high:.2f},{low:.2f},{new:.2f},{volume:.1f}\n")
    return {sym: "".join(rows) for sym, rows in lines.items()}


def write_examples(out: Path) -> list[Path]:
    """Write every example export below ``out``; return the paths written."""
    written = []
    crypto = _bars(random.Random(20261201), _days(weekdays_only=False), CRYPTO, 0, 0)
    equity = _bars(random.Random(20261202), _days(weekdays_only=True), EQUITY, 14, 30)
    for directory, files in ((out, crypto), (out / "equity", equity)):
        directory.mkdir(parents=True, exist_ok=True)
        for sym, text in files.items():
            path = directory / f"SYNTHETIC_{sym}, 1D.csv"
            path.write_text(text)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/tradingview", help="output directory (default: %(default)s)")
    for path in write_examples(Path(parser.parse_args().out)):
        print(path)


if __name__ == "__main__":
    main()
