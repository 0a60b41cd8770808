"""The hash-chained audit ledger (``audit.jsonl``) of a run: genesis, stage records, verification.

The ledger file itself (paths, locks, appends) lives in ``_ledger``, over the hashing of
``_hashing``; ``_records`` writes the genesis and stage entries, ``_artifacts`` checks the
recorded artifacts against their files (and discards damaged ones), and ``_verification``
verifies a whole ledger (``python -m tradingview_scraper.audit verify <run_dir>``).
"""

from ._artifacts import (
    Damage,
    Recorded,
    check_inputs,
    damaged,
    discard,
    failures,
    genesis_of,
    last_seq,
    recorded,
    recorded_inputs,
    retire,
    unfinished,
)
from ._hashing import file_sha256, fingerprint
from ._ledger import ENTRY_KEYS, GENESIS_PREV_HASH, RENAMED_STAGES
from ._records import KEY_LIBRARIES, OUTCOMES, genesis, git_commit, record_stage, stage_audit
from ._verification import main, verify

__all__ = [
    "ENTRY_KEYS",
    "GENESIS_PREV_HASH",
    "RENAMED_STAGES",
    "KEY_LIBRARIES",
    "OUTCOMES",
    "Damage",
    "Recorded",
    "check_inputs",
    "damaged",
    "discard",
    "failures",
    "genesis_of",
    "file_sha256",
    "fingerprint",
    "genesis",
    "git_commit",
    "last_seq",
    "main",
    "record_stage",
    "recorded",
    "recorded_inputs",
    "retire",
    "stage_audit",
    "unfinished",
    "verify",
]
