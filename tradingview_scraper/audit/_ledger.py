"""The ledger file of a run: its path, locking, reading its first and last entries, appending one."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from ..layout import Node
from ._hashing import _entry_hash, _normalise, _now, file_sha256, fingerprint

#: ``prev_hash`` of the genesis entry.
GENESIS_PREV_HASH = "0" * 64

#: Keys every ledger entry carries besides its payload.
ENTRY_KEYS = ("seq", "prev_hash", "time", "kind", "hash")

#: Stage names older ledgers use -> the step's name now (each step's rule, stage function, ledger
#: stage and log share one name): a rerun of an old run under the new name repairs a failure
#: recorded under the old one.
RENAMED_STAGES = {"meta_stream": "node_returns", "pin": "pinned_sleeve", "resolve": "resolved_manifest"}

_TAIL_CHUNK = 8192

# One threading lock per ledger path: flock() serialises processes, these serialise the
# threads of one process (and keep the lock-file handling simple).
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _reset_locks_after_fork() -> None:
    """Give a forked child fresh locks: a lock held by another parent thread would never be freed."""
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    _LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)


# --------------------------------------------------------------------------- paths


def _ledger_path(run_dir: Path | str | Node) -> Path:
    node = run_dir if isinstance(run_dir, Node) else Node(Path(run_dir))
    return node.file("audit")


def _run_dir_of(run_dir: Path | str | Node) -> Path:
    return run_dir.dir if isinstance(run_dir, Node) else Path(run_dir)


def _lock_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".lock")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _relative(run_dir: Path, path: Path | str | Node) -> str:
    """``path`` as a posix path relative to ``run_dir`` (``"."`` for the run directory itself).

    An absolute path, or a relative path that lies inside ``run_dir`` when read from the
    working directory (``data/runs/<id>/...``), is used as is; any other relative path is
    taken relative to ``run_dir`` (``sleeves/tech/returns.parquet``).
    """
    raw = path.dir if isinstance(path, Node) else Path(path)
    root = os.path.abspath(run_dir)
    candidate = os.path.abspath(raw)
    if not raw.is_absolute() and not _inside(candidate, root):
        candidate = os.path.abspath(os.path.join(root, raw))
    return Path(os.path.relpath(candidate, root)).as_posix()


def _hashed(run_dir: Path, paths: list[Any], what: str, stat: bool = False) -> list[dict[str, str | None]]:
    """``{"path", "sha256"}`` per path (plus ``"stat"``, its :func:`fingerprint`, when ``stat``).

    A path outside ``run_dir`` (a price file, a holdings file, a pinned run's artifact) always
    carries ``"stat"``, its :func:`deps.stat_key`: the workflow then reuses the recorded
    sha256 while the file's stat is unchanged (see :func:`recorded_inputs`).
    """
    from ..deps import stat_key

    if isinstance(paths, (str, os.PathLike, Node)):
        raise PipelineError(f"audit: {what} must be a list of paths, got a single path {paths!r}")
    out = []
    for item in paths:
        rel = _relative(run_dir, item)
        full = run_dir / rel
        external = rel.startswith("../")
        before = stat_key(full) if external else fingerprint(full) if stat else None  # stat first: a later change then shows
        record = {"path": rel, "sha256": file_sha256(full) if full.exists() else None}
        if stat or external:
            record["stat"] = before
        out.append(record)
    return out


# --------------------------------------------------------------------------- locked ledger I/O


@contextmanager
def _locked(ledger: Path) -> Iterator[None]:
    """Hold the ledger's thread lock and an exclusive ``flock`` on ``audit.jsonl.lock``."""
    key = os.path.abspath(ledger)
    with _LOCKS_GUARD:
        tlock = _LOCKS.setdefault(key, threading.Lock())
    with tlock:
        fd = os.open(_lock_path(ledger), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _parse_entry(line: bytes, ledger: Path, where: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise PipelineError(
            f"audit: {where} entry of {ledger} is malformed ({exc}); run "
            f"`python -m tradingview_scraper.audit verify {ledger.parent}`"
        ) from exc
    if not isinstance(entry, dict) or not all(k in entry for k in ENTRY_KEYS):
        raise PipelineError(f"audit: {where} entry of {ledger} lacks one of {list(ENTRY_KEYS)}")
    if not isinstance(entry["seq"], int) or not isinstance(entry["hash"], str):
        raise PipelineError(f"audit: {where} entry of {ledger} has a bad seq or hash")
    return entry


def _read_first_entry(ledger: Path) -> dict[str, Any] | None:
    with open(ledger, "rb") as fh:
        line = fh.readline()
    if not line.strip():
        return None
    return _parse_entry(line, ledger, "first")


def _read_last_entry(ledger: Path) -> dict[str, Any] | None:
    """The last entry, read backwards from the end of the file (never the whole ledger)."""
    with open(ledger, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return None
        fh.seek(end - 1)
        if fh.read(1) != b"\n":
            raise PipelineError(
                f"audit: {ledger} ends with an incomplete line (interrupted write); run "
                f"`python -m tradingview_scraper.audit verify {ledger.parent}` and repair it"
            )
        pos, buf = end, b""
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut != -1:
                buf = buf[cut + 1 :]
                break
    return _parse_entry(buf, ledger, "last")


def _append_line(ledger: Path, line: str) -> None:
    """Append one line with a single O_APPEND write, then flush it to disk."""
    data = line.encode("utf-8")
    created = not ledger.exists()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dfd = os.open(ledger.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def _make_entry(seq: int, prev_hash: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    body = {**payload, "seq": seq, "prev_hash": prev_hash, "time": _now(), "kind": kind}
    body = _normalise(body, f"{kind} entry")
    body["hash"] = _entry_hash(body)
    return body
