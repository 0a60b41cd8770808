"""``python -m tradingview_scraper.audit verify <run_dir>``: verify a run's ledger and artifacts."""

import sys

from ._verification import main

sys.exit(main())
