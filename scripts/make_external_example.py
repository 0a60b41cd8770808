#!/usr/bin/env python
"""Write the SYNTHETIC example external sleeve under data/external/ (deterministic).

A made-up trend book run "elsewhere": its daily returns (a random walk, not market data), its
current holdings, the two files an external sleeve reads, and a price table of its symbols
(random walks too), which lets a run with trading settings value and order them. The shipped profile
`meta_custom` combines it with a computed sleeve. Rerunning the script rewrites
byte-identical files (Python's `random` with a fixed seed, fixed decimals).

    python scripts/make_external_example.py [--out data/external]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
from pathlib import Path

#: Weekdays of the span, so the stream overlaps the embedded S&P 500 data (2012-2022).
START, END = dt.date(2012, 1, 2), dt.date(2022, 12, 30)
#: Days the synthetic book does not trade (month, day), when they fall on a weekday.
HOLIDAYS = ((1, 1), (7, 4), (12, 25))
DRIFT, VOL = 0.0003, 0.007

HOLDINGS = "symbol,direction,weight\nSPY,LONG,0.4\nGLD,LONG,0.25\nUSO,LONG,0.15\nTLT,SHORT,0.2\n"
#: The book's symbols, their first synthetic price and daily volatility (the price table's columns).
PRICED = (("SPY", 125.0, 0.011), ("GLD", 155.0, 0.009), ("USO", 38.0, 0.02), ("TLT", 120.0, 0.008))


def returns_csv() -> str:
    """``date,return``: one synthetic daily return per weekday of the span."""
    rng = random.Random(20261207)
    lines, day = ["date,return\n"], START
    while day <= END:
        if day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS:
            lines.append(f"{day.isoformat()},{rng.gauss(DRIFT, VOL):.8f}\n")
        day += dt.timedelta(days=1)
    return "".join(lines)


def _days() -> list[dt.date]:
    """The weekdays of the span the synthetic book trades."""
    out, day = [], START
    while day <= END:
        if day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def prices_csv() -> str:
    """``date,SPY,GLD,USO,TLT``: one synthetic close per symbol and trading day (geometric random walks),
    the price table that lets a run value and order the book (``external.prices``)."""
    rng = random.Random(20261208)
    level = [p0 for _, p0, _ in PRICED]
    lines = ["date," + ",".join(s for s, _, _ in PRICED) + "\n"]
    for day in _days():
        level = [p * math.exp(rng.gauss(0.0, vol)) for p, (_, _, vol) in zip(level, PRICED, strict=True)]
        lines.append(day.isoformat() + "," + ",".join(f"{p:.4f}" for p in level) + "\n")
    return "".join(lines)


def write_example(out: Path) -> list[Path]:
    """Write the example's returns, holdings and prices below ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {out / "SYNTHETIC_trend_returns.csv": returns_csv(), out / "SYNTHETIC_trend_holdings.csv": HOLDINGS,
             out / "SYNTHETIC_trend_prices.csv": prices_csv()}  # fmt: skip
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/external", help="output directory (default: %(default)s)")
    for path in write_example(Path(parser.parse_args().out)):
        print(path)


if __name__ == "__main__":
    main()
