"""``python -m tradingview_scraper.audit verify <run_dir>``: verify a run's ledger and artifacts."""

import sys

from . import main

sys.exit(main())
