"""The hash-chained audit ledger (``audit.jsonl``) of a run: genesis, stage records, verification.

``_ledger`` owns the file (entry hashing, locking, appending) and the one walk that checks
its chain, for :func:`verify` (``python -m tradingview_scraper.audit verify <run_dir>``) and
for the index of ``_artifacts``, which checks recorded artifacts against their files and
discards damaged ones; ``_records`` writes the genesis and stage entries.
"""

from ..deps import file_sha256, fingerprint
from ._artifacts import (
    Damage,
    check_inputs,
    damaged,
    digests,
    discard,
    failures,
    genesis_of,
    last_seq,
    recorded,
    recorded_inputs,
    retire,
    unfinished,
)
from ._ledger import ENTRY_KEYS, GENESIS_PREV_HASH, RENAMED_STAGES, Recorded, main, verify
from ._records import KEY_LIBRARIES, OUTCOMES, genesis, git_commit, record_stage, stage_audit

__all__ = [
    "ENTRY_KEYS", "GENESIS_PREV_HASH", "KEY_LIBRARIES", "OUTCOMES", "RENAMED_STAGES", "Damage", "Recorded",
    "check_inputs", "damaged", "digests", "discard", "failures", "file_sha256", "fingerprint", "genesis", "genesis_of",
    "git_commit", "last_seq", "main", "record_stage", "recorded", "recorded_inputs", "retire", "stage_audit",
    "unfinished", "verify",
]  # fmt: skip
