#!/usr/bin/env python
"""Run a meta profile through the canonical pipeline (workflow/Snakefile via Snakemake's API)."""

import sys

from tradingview_scraper.orchestration.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="run_meta_pipeline.py", require_meta=True))
