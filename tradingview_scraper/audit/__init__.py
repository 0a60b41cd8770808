"""The hash-chained audit ledger (``audit.jsonl``) of a run: genesis, stage records, verification.

``_ledger`` owns the file: its entries' format, its locks, appending, and the one fold that
reads it (its entries, its chain checked, the latest record per artifact); ``_records`` writes
the genesis and stage entries; ``_artifacts`` answers from a fold what the run needs (recorded
artifacts checked against their files, damaged ones discarded, the run's failures) and
:func:`verify` (``python -m tradingview_scraper.audit verify <run_dir>``).
"""

from ..deps import file_sha256, fingerprint
from ._artifacts import (
    check_inputs,
    damaged,
    digests,
    discard,
    first_failure,
    last_seq,
    main,
    recorded,
    recorded_inputs,
    retire,
    unfinished,
    verify,
)
from ._ledger import GENESIS_PREV_HASH, RENAMED_STAGES, genesis_for, genesis_of, stage_entries
from ._records import genesis, git_commit, record_stage, stage_audit

__all__ = [
    "GENESIS_PREV_HASH", "RENAMED_STAGES", "check_inputs", "damaged", "digests", "discard", "file_sha256",
    "fingerprint", "first_failure", "genesis", "genesis_for", "genesis_of", "git_commit", "last_seq", "main", "record_stage",
    "recorded", "recorded_inputs", "retire", "stage_audit", "stage_entries", "unfinished", "verify",
]  # fmt: skip
