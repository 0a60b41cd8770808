#!/usr/bin/env python
"""Write the SYNTHETIC example external sleeve under data/external/ (deterministic).

A made-up trend book run "elsewhere": its daily returns (a random walk, not market data) and
its current holdings, the two files an external sleeve reads. The shipped profile
`meta_custom` combines it with a computed sleeve. Rerunning the script rewrites
byte-identical files (Python's `random` with a fixed seed, fixed decimals).

    python scripts/make_external_example.py [--out data/external]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from pathlib import Path

#: Weekdays of the span, so the stream overlaps the embedded S&P 500 data (2012-2022).
START, END = dt.date(2012, 1, 2), dt.date(2022, 12, 30)
#: Days the synthetic book does not trade (month, day), when they fall on a weekday.
HOLIDAYS = ((1, 1), (7, 4), (12, 25))
DRIFT, VOL = 0.0003, 0.007

HOLDINGS = "symbol,direction,weight\nSPY,LONG,0.4\nGLD,LONG,0.25\nUSO,LONG,0.15\nTLT,SHORT,0.2\n"


def returns_csv() -> str:
    """``date,return``: one synthetic daily return per weekday of the span."""
    rng = random.Random(20261207)
    lines, day = ["date,return\n"], START
    while day <= END:
        if day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS:
            lines.append(f"{day.isoformat()},{rng.gauss(DRIFT, VOL):.8f}\n")
        day += dt.timedelta(days=1)
    return "".join(lines)


def write_example(out: Path) -> list[Path]:
    """Write the example's returns and holdings below ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {out / "SYNTHETIC_trend_returns.csv": returns_csv(), out / "SYNTHETIC_trend_holdings.csv": HOLDINGS}
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
