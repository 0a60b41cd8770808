#!/usr/bin/env python
"""Production entry point: a meta profile takes the canonical meta pipeline; an atomic profile
runs that one sleeve into its own run directory (the same workflow, a sleeve target)."""

import sys

from tradingview_scraper.orchestration.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="run_production_pipeline.py", require_meta=False))
