"""Hashing of artifacts and ledger entries: file sha256, stat fingerprints, canonical JSON."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from ..layout import dumps_json

_CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file's bytes.

    Parameters
    ----------
    path : path-like
        The file to hash. A directory (e.g. ``report_assets``) is hashed as a tree: the
        sha256 of its sorted ``relative/posix/path<NUL>file sha256<LF>`` lines.

    Returns
    -------
    str
        64 lowercase hex characters.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            rel = file.relative_to(path).as_posix()
            digest.update(f"{rel}\0{file_sha256(file)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: Path | str) -> str | None:
    """What ``stat`` says about a file (size, mtime, ctime, inode), or None if it is absent.

    Any write, rename or ``touch`` changes it (ctime cannot be set from user space), so a
    file whose fingerprint equals the one recorded when it was written has the recorded
    bytes, and needs no hashing. A directory's fingerprint covers every file below it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        path = Path(path)
        lines = sorted(f"{p.relative_to(path).as_posix()}\0{fingerprint(p)}\n" for p in path.rglob("*") if p.is_file())
        return "tree:" + hashlib.sha256("".join(lines).encode()).hexdigest()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _canonical(obj: Any) -> str:
    """Canonical one-line JSON: sorted keys, separators ``(",", ":")``, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _entry_hash(entry: dict[str, Any]) -> str:
    """Hash of an entry: sha256 of the canonical JSON of the entry without its ``hash`` key."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def _normalise(obj: Any, what: str) -> Any:
    """``obj`` as plain JSON data (the layout's JSON rules), so hashing what is stored is stable."""
    try:
        return json.loads(dumps_json(obj))
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"audit: {what} is not JSON-serialisable ({exc})") from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
