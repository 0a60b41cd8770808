"""The hash-chained audit ledger (``audit.jsonl``) of a run: genesis, stage records, verification.

``_ledger`` owns the file's format, its locks and the one walk that checks its chain, for
:func:`verify` (``python -m tradingview_scraper.audit verify <run_dir>``) and for the index of
``_artifacts``, which appends to the ledger, checks recorded artifacts against their files and
discards damaged ones; ``_records`` writes the genesis and stage entries.
"""

from ..deps import file_sha256, fingerprint
from ._artifacts import (
    check_inputs,
    damaged,
    digests,
    discard,
    first_failure,
    last_seq,
    recorded,
    recorded_inputs,
    retire,
    unfinished,
)
from ._ledger import (
    GENESIS_PREV_HASH,
    RENAMED_STAGES,
    genesis_for,
    genesis_of,
    main,
    stage_entries,
    verify,
)
from ._records import genesis, git_commit, record_stage, stage_audit

__all__ = [
    "GENESIS_PREV_HASH", "RENAMED_STAGES", "check_inputs", "damaged", "digests", "discard", "file_sha256",
    "fingerprint", "first_failure", "genesis", "genesis_for", "genesis_of", "git_commit", "last_seq", "main", "record_stage",
    "recorded", "recorded_inputs", "retire", "stage_audit", "stage_entries", "unfinished", "verify",
]  # fmt: skip
