"""The hash-chained audit ledger (``audit.jsonl``) of a run: genesis, stage records, verification."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .errors import PipelineError
from .layout import Node, dumps_json

#: ``prev_hash`` of the genesis entry.
GENESIS_PREV_HASH = "0" * 64

#: Libraries whose installed versions the genesis entry records (never imported).
KEY_LIBRARIES = ("snakemake", "ray", "pandas", "numpy", "pyarrow", "skfolio", "scipy")

#: Keys every ledger entry carries besides its payload.
ENTRY_KEYS = ("seq", "prev_hash", "time", "kind", "hash")

OUTCOMES = ("success", "error")

_CHUNK = 1 << 20
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


# --------------------------------------------------------------------------- hashing helpers


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
    """``{"path", "sha256"}`` per path (plus ``"stat"``, its :func:`fingerprint`, when ``stat``)."""
    if isinstance(paths, (str, os.PathLike, Node)):
        raise PipelineError(f"audit: {what} must be a list of paths, got a single path {paths!r}")
    out = []
    for item in paths:
        rel = _relative(run_dir, item)
        full = run_dir / rel
        before = fingerprint(full) if stat else None  # stat first: a later change then shows
        record = {"path": rel, "sha256": file_sha256(full) if full.exists() else None}
        if stat:
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


# --------------------------------------------------------------------------- genesis


def _git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None (no repo, no git, any failure)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    sha = proc.stdout.strip()
    if proc.returncode != 0 or not sha or any(c not in "0123456789abcdef" for c in sha):
        return None
    return sha


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def genesis(
    run_dir: Path | str | Node,
    *,
    run_id: str,
    meta_profile: str,
    manifest_path: Path | str,
    manifest_sha256: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the genesis entry of a run's ledger, once.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory (created if missing).
    run_id : str
        The run id the ledger belongs to.
    meta_profile : str
        The (meta or atomic) profile the run executes.
    manifest_path : path-like
        The manifest the run was resolved from.
    manifest_sha256 : str
        sha256 of that manifest.
    extra : dict, optional
        Further JSON-able facts to record under ``extra``.

    Returns
    -------
    dict
        The genesis entry: ``seq`` 0, ``prev_hash`` ``"0" * 64``, ``kind`` ``"genesis"``,
        ``run_id``, ``meta_profile``, ``manifest`` (path, sha256), ``package_version``,
        ``git_commit`` (None outside a git checkout), ``python``, ``platform``,
        ``libraries`` (installed versions of the key libraries), ``extra`` and ``hash``.

    Raises
    ------
    PipelineError
        If the ledger already starts with the genesis of a different run id, or does not
        start with a genesis entry at all.

    Notes
    -----
    Idempotent: if the ledger already holds the genesis of ``run_id``, that entry is
    returned unchanged and nothing is written.
    """
    ledger = _ledger_path(run_dir)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with _locked(ledger):
        if ledger.exists() and ledger.stat().st_size > 0:
            first = _read_first_entry(ledger)
            if first is None or first.get("kind") != "genesis":
                raise PipelineError(f"audit: {ledger} does not start with a genesis entry")
            if first.get("run_id") != run_id:
                raise PipelineError(
                    f"audit: {ledger} belongs to run {first.get('run_id')!r}, not {run_id!r}; "
                    "use a fresh run directory for a new run id"
                )
            return first
        payload = {
            "run_id": run_id,
            "meta_profile": meta_profile,
            "manifest": {"path": Path(manifest_path).as_posix(), "sha256": manifest_sha256},
            "package_version": __version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": _library_versions(),
            "extra": extra or {},
        }
        entry = _make_entry(0, GENESIS_PREV_HASH, "genesis", payload)
        _append_line(ledger, _canonical(entry) + "\n")
        return entry


# --------------------------------------------------------------------------- stage records


def record_stage(
    run_dir: Path | str | Node,
    *,
    stage: str,
    node: Path | str | Node,
    params: dict[str, Any],
    inputs: list[Any],
    outputs: list[Any],
    outcome: str,
    error: str | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """Append one stage entry to the run's ledger.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory; its ledger must already hold a genesis entry.
    stage : str
        Stage name, e.g. ``"sleeve"``, ``"meta_returns"``.
    node : path-like or Node
        The node the stage worked on; recorded relative to ``run_dir`` (``"."`` = root).
    params : dict
        JSON-able parameters of the stage.
    inputs, outputs : list of path-like
        Files read / written. Relative paths are taken relative to ``run_dir`` unless they
        already point inside it from the working directory. Each is recorded as
        ``{"path": <posix path relative to run_dir>, "sha256": <hex or None if missing>}``.
    outcome : {"success", "error"}
        How the stage ended.
    error : str, optional
        The error message when ``outcome == "error"``.
    duration_s : float, optional
        Wall-clock duration of the stage.

    Returns
    -------
    dict
        The appended entry (with its ``seq``, ``prev_hash`` and ``hash``).

    Raises
    ------
    PipelineError
        If the ledger does not exist or is empty (call :func:`genesis` first), its last
        line is unreadable, or ``params`` is not JSON-serialisable.
    ValueError
        If ``outcome`` is neither ``"success"`` nor ``"error"``.

    Notes
    -----
    Safe under concurrency: reading the last entry, appending and fsync happen under a
    per-ledger threading lock and an exclusive ``flock`` on ``audit.jsonl.lock``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit: outcome must be one of {OUTCOMES}, got {outcome!r}")
    root = _run_dir_of(run_dir)
    ledger = _ledger_path(run_dir)
    no_genesis = PipelineError(
        f"audit: no ledger at {ledger}; start the run with audit.genesis() before recording "
        f"stage {stage!r}"
    )
    if not ledger.is_file():
        raise no_genesis
    payload = {
        "stage": stage,
        "node": _relative(root, node),
        "params": _normalise(params, f"params of stage {stage!r}"),
        "inputs": _hashed(root, inputs, "inputs"),
        "outputs": _hashed(root, outputs, "outputs", stat=True),
        "outcome": outcome,
        "error": error,
        "duration_s": None if duration_s is None else round(float(duration_s), 6),
    }
    with _locked(ledger):
        last = _read_last_entry(ledger)
        if last is None:
            raise no_genesis
        entry = _make_entry(last["seq"] + 1, last["hash"], "stage", payload)
        _append_line(ledger, _canonical(entry) + "\n")
    return entry


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class stage_audit:  # noqa: N801 - used like a function: ``with stage_audit(...):``
    """Context manager recording one stage in the ledger when the block ends.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory (its ledger must hold a genesis entry).
    stage : str
        Stage name.
    node : path-like or Node
        The node the stage works on.
    params : dict
        JSON-able stage parameters.
    inputs, outputs : list of path-like
        Files read / written. ``inputs``, ``outputs`` and ``params`` may be changed inside
        the block (attributes of the same names); outputs are hashed on exit.

    Notes
    -----
    On a normal exit, records ``outcome="success"`` with the output hashes. When the block
    raises, records ``outcome="error"`` with the exception's one-line message and re-raises
    the exception; if recording itself fails then, the original exception still propagates
    (with a note). ``duration_s`` is the block's wall-clock time. The recorded entry is
    available as ``.entry``.

    Examples
    --------
    >>> with stage_audit(run, "flatten", ".", {"profile": "hrp"}, ins, outs):  # doctest: +SKIP
    ...     write_flattened(...)
    """

    def __init__(
        self,
        run_dir: Path | str | Node,
        stage: str,
        node: Path | str | Node,
        params: dict[str, Any],
        inputs: list[Any],
        outputs: list[Any],
    ) -> None:
        self.run_dir = run_dir
        self.stage = stage
        self.node = node
        self.params = params
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.entry: dict[str, Any] | None = None
        self._start: float | None = None

    def __enter__(self) -> stage_audit:
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = time.perf_counter() - (self._start or time.perf_counter())
        kwargs = dict(
            stage=self.stage,
            node=self.node,
            params=self.params,
            inputs=self.inputs,
            outputs=self.outputs,
            duration_s=duration,
        )
        if exc is None:
            self.entry = record_stage(self.run_dir, outcome="success", **kwargs)
            return False
        try:
            self.entry = record_stage(
                self.run_dir, outcome="error", error=_one_line(exc), **kwargs
            )
        except Exception as audit_exc:  # never mask the stage's own failure
            exc.add_note(f"audit: could not record the failure of stage {self.stage!r}: {audit_exc}")
        return False


# --------------------------------------------------------------------------- artifacts against their records


@dataclass(frozen=True)
class Recorded:
    """The latest successful record of an artifact: who wrote it, its sha256 and its fingerprint."""

    path: str
    stage: str
    seq: int
    sha256: str | None
    stat: str | None


@dataclass(frozen=True)
class Damage:
    """An artifact whose file no longer matches its record (``missing`` or ``changed``)."""

    record: Recorded
    problem: str

    def line(self, run_dir: Path | str) -> str:
        where = Path(run_dir) / self.record.path
        return f"{where} {self.problem} since stage {self.record.stage} wrote it (audit seq {self.record.seq})"


_HASH_FIELD = re.compile(rb',"hash":"([0-9a-f]{64})"|"hash":"([0-9a-f]{64})",')


def _line_hash_ok(raw: bytes, entry: dict[str, Any]) -> bool:
    """Whether ``entry`` (parsed from ledger line ``raw``) carries its own hash.

    The ledger writes canonical JSON, so the hashed body is the line without its ``hash``
    field: one sha256 of bytes instead of re-serializing the entry. Any other spelling of
    the line falls back to :func:`_entry_hash`.
    """
    want = entry.get("hash")
    body = raw.rstrip(b"\n")
    for match in _HASH_FIELD.finditer(body):
        if (match[1] or match[2]).decode() == want:
            cut = body[: match.start()] + body[match.end() :]
            if hashlib.sha256(cut).hexdigest() == want:
                return True
    return _entry_hash(entry) == want


class _Index:
    """Latest record per artifact of one ledger, read incrementally (the ledger is append-only).

    Every complete line read is checked like :func:`verify` does (entry hash, seq, chain),
    so the index is only ever built on a ledger that verifies.
    """

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.offset, self.inode, self.line, self.tail = 0, None, 0, b""
        self.next_seq, self.prev_hash = 0, GENESIS_PREV_HASH
        self.latest: dict[str, Recorded] = {}
        self.io: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # seq -> (inputs, outputs)

    def refresh(self, reread: bool = False) -> dict[str, Recorded]:
        """Read what was appended since the last call (``reread``: the whole ledger, verifying it anew)."""
        with self.lock:
            try:
                st = self.ledger.stat()
            except FileNotFoundError:
                self._reset()
                return {}
            if reread or st.st_ino != self.inode or st.st_size < self.offset:
                self._reset()
            self.inode = st.st_ino
            if st.st_size == self.offset:
                return self.latest
            with open(self.ledger, "rb") as fh:
                fh.seek(self.offset - len(self.tail))
                data = fh.read()
            if not data.startswith(self.tail):  # rewritten in place (a reused inode): read it anew
                self._reset()
                with open(self.ledger, "rb") as fh:
                    data = fh.read()
            data = data[len(self.tail) :]
            end = data.rfind(b"\n") + 1  # an incomplete last line is being written: read it later
            lines = data[:end].splitlines(keepends=True)
            for raw in lines:
                self.line += 1
                self._add(raw)
            self.offset += end
            if lines:
                self.tail = lines[-1]
            return self.latest

    def _add(self, raw: bytes) -> None:
        where = f"audit: {self.ledger} line {self.line}"
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not all(k in entry for k in ENTRY_KEYS):
            raise PipelineError(f"{where} is not a ledger entry; {_DAMAGED_LEDGER}")
        if not _line_hash_ok(raw, entry) or entry["seq"] != self.next_seq or entry["prev_hash"] != self.prev_hash:
            raise PipelineError(f"{where} (seq {entry['seq']}) was altered or breaks the hash chain; {_DAMAGED_LEDGER}")
        self.next_seq, self.prev_hash = entry["seq"] + 1, entry["hash"]
        kind = entry["kind"]
        if kind == "stage" and entry.get("outcome") == "success":
            outputs = tuple(out["path"] for out in entry.get("outputs") or [])
            self.io[entry["seq"]] = (tuple(i["path"] for i in entry.get("inputs") or []), outputs)
            for out in entry.get("outputs") or []:
                rel = out["path"]
                self.latest[rel] = Recorded(rel, str(entry["stage"]), entry["seq"], out.get("sha256"), out.get("stat"))
        elif kind == "discard":
            for rel in entry.get("paths") or []:
                self.latest.pop(rel, None)


    def computed_from(self, paths: set[str]) -> set[str]:
        """``paths``, the other outputs of the stages that wrote them, and everything recorded as computed from them."""
        with self.lock:
            live = {r.seq for r in self.latest.values()}
            io = {seq: self.io[seq] for seq in live if seq in self.io}
            producer = {rel: r.seq for rel, r in self.latest.items()}
        consumers: dict[str, set[int]] = {}
        for seq, (inputs, _) in io.items():
            for rel in inputs:
                consumers.setdefault(rel, set()).add(seq)
        out, todo = set(), list(paths)
        while todo:
            rel = todo.pop()
            if rel in out:
                continue
            out.add(rel)
            seqs = consumers.get(rel, set()) | ({producer[rel]} if rel in producer else set())
            todo.extend(o for seq in seqs for o in io.get(seq, ((), ()))[1] if o not in out)
        return {rel for rel in out if rel in producer or rel in paths}


_DAMAGED_LEDGER = (
    "the run's record cannot be trusted: run `python -m tradingview_scraper.audit verify <run_dir>`, "
    "restore audit.jsonl or start a new run id"
)
_INDEXES: dict[str, _Index] = {}


def _index(run_dir: Path | str | Node) -> _Index:
    ledger = _ledger_path(run_dir)
    key = os.path.abspath(ledger)
    with _LOCKS_GUARD:
        return _INDEXES.setdefault(key, _Index(ledger))


def _check(root: Path, record: Recorded) -> str | None:
    """None if the file still matches ``record`` (its fingerprint, else its sha256), else the problem."""
    full = os.path.join(root, record.path)
    fp = fingerprint(full)
    if fp is None:
        return "is missing"
    if record.stat is not None and fp == record.stat:
        return None
    if record.sha256 is not None and file_sha256(full) == record.sha256:
        return None
    return "changed"


def damaged(run_dir: Path | str | Node) -> list[Damage]:
    """Every artifact the ledger records whose file is missing or no longer has the recorded bytes.

    The whole ledger is read and its chain verified; then stat first: a file whose
    fingerprint (size, mtime, ctime, inode) equals the one recorded at write time is not
    read, any other is hashed. A missing ledger means nothing recorded.

    Raises
    ------
    PipelineError
        The ledger does not verify (an altered entry, a broken chain, a malformed line).
    """
    root = _run_dir_of(run_dir)
    out = []
    for record in list(_index(run_dir).refresh(reread=True).values()):
        problem = _check(root, record)
        if problem:
            out.append(Damage(record, problem))
    return out


def last_seq(run_dir: Path | str | Node) -> int:
    """``seq`` of the ledger's last entry (-1 without a ledger)."""
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return -1
    last = _read_last_entry(ledger)
    return -1 if last is None else int(last["seq"])


def failures(run_dir: Path | str | Node, after: int = -1) -> list[dict[str, Any]]:
    """The stage entries recorded with ``outcome="error"`` after entry ``after``, in ledger order."""
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return []
    out = []
    for raw in ledger.read_bytes().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("kind") == "stage" and entry.get("outcome") == "error":
            if isinstance(entry.get("seq"), int) and entry["seq"] > after:
                out.append(entry)
    return out


def check_inputs(
    run_dir: Path | str | Node, inputs: list[Any], hint: str = "rerun the same command to recompute it"
) -> None:
    """Refuse to consume an input artifact that no longer matches its record in the run's ledger.

    Inputs outside ``run_dir`` and inputs without a record (not written by a stage of this
    run) are not checked here.

    Raises
    ------
    DataError
        Naming the first input that is missing or changed since it was written.
    """
    from .errors import DataError

    root = _run_dir_of(run_dir)
    latest = None
    for item in inputs:
        rel = _relative(root, item)
        if rel.startswith("../"):
            continue
        if latest is None:
            latest = _index(run_dir).refresh()
        record = latest.get(rel)
        if record is None:
            continue
        problem = _check(root, record)
        if problem:
            raise DataError(f"{Damage(record, problem).line(root)}; {hint}")


def discard(run_dir: Path | str | Node, damages: list[Damage]) -> list[str]:
    """Delete damaged artifacts and what was computed from them, and record that in the ledger.

    Snakemake reruns the producer of a missing file only when a job that needs it reruns,
    so the other outputs of the damaged files' stages and every artifact the ledger records
    as computed from them (transitively, up to the final targets) go too: the chain from a
    target down to each damaged file is then missing, and reruns. (They would rerun anyway,
    their inputs being recomputed.) The ``discard`` entry retires the records: :func:`verify`
    no longer expects those files, and the stage that writes one again records it anew.

    Returns
    -------
    list of str
        Every path deleted, relative to ``run_dir``, sorted.
    """
    from .layout import remove_artifact

    if not damages:
        return []
    root = _run_dir_of(run_dir)
    doomed = sorted(_index(run_dir).computed_from({d.record.path for d in damages}))
    for rel in doomed:
        remove_artifact(root / rel)
    payload = {
        "paths": doomed,
        "problems": {d.record.path: f"{d.problem} since stage {d.record.stage} (seq {d.record.seq})" for d in damages},
    }
    ledger = _ledger_path(run_dir)
    with _locked(ledger):
        last = _read_last_entry(ledger)
        if last is None:
            raise PipelineError(f"audit: {ledger} has no genesis entry")
        entry = _make_entry(last["seq"] + 1, last["hash"], "discard", payload)
        _append_line(ledger, _canonical(entry) + "\n")
    return doomed


# --------------------------------------------------------------------------- verification


def _verify(run_dir: Path | str | Node) -> tuple[list[str], int, int]:
    """Problems, number of entries and number of artifacts checked."""
    root = _run_dir_of(run_dir)
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return [f"missing genesis: no ledger at {ledger}"], 0, 0
    data = ledger.read_bytes()
    if not data:
        return [f"missing genesis: ledger {ledger} is empty"], 0, 0

    problems: list[str] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        problems.append(f"line {len(lines)}: incomplete last line (interrupted write)")

    expected_seq = 0
    expected_prev: str | None = GENESIS_PREV_HASH
    prev_seq: int | None = None
    n_entries = 0
    latest: dict[str, tuple[str, str | None, int]] = {}
    for lineno, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if (
            not isinstance(entry, dict)
            or not all(k in entry for k in ENTRY_KEYS)
            or not isinstance(entry["seq"], int)
            or isinstance(entry["seq"], bool)
            or not isinstance(entry["hash"], str)
            or not isinstance(entry["prev_hash"], str)
        ):
            problems.append(f"line {lineno}: malformed entry (not a JSON ledger object)")
            if lineno == 1:
                problems.append("missing genesis: the first line is not a genesis entry")
            expected_seq += 1
            expected_prev = None  # unknown; the malformed line is already reported
            continue
        n_entries += 1
        seq, kind = entry["seq"], entry.get("kind")
        label = f"line {lineno} (seq {seq})"
        if lineno == 1 and kind != "genesis":
            problems.append(f"missing genesis: the first entry is of kind {kind!r}")
        elif lineno > 1 and kind == "genesis":
            problems.append(f"{label}: unexpected second genesis entry")
        elif kind not in ("genesis", "stage", "discard"):
            problems.append(f"{label}: unknown kind {kind!r}")
        if _entry_hash(entry) != entry["hash"]:
            problems.append(f"{label}: bad hash, entry altered after it was written")
        if seq != expected_seq:
            after = f"after seq {prev_seq}" if prev_seq is not None else "at the start"
            problems.append(f"{label}: seq gap, expected seq {expected_seq} {after}")
        if expected_prev is not None and entry["prev_hash"] != expected_prev:
            what = "the genesis value" if lineno == 1 else "the previous entry's hash"
            problems.append(f"{label}: broken chain, prev_hash does not match {what}")
        expected_seq, expected_prev, prev_seq = seq + 1, entry["hash"], seq

        if kind == "stage" and entry.get("outcome") == "success":
            outputs = entry.get("outputs")
            if not isinstance(outputs, list):
                problems.append(f"{label}: malformed outputs")
                continue
            for out in outputs:
                if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                    problems.append(f"{label}: malformed output record {out!r}")
                    continue
                latest[out["path"]] = (str(entry.get("stage")), out.get("sha256"), seq)
        elif kind == "discard":  # damaged artifacts deleted on purpose: their producers rerun
            for rel in entry.get("paths") or []:
                latest.pop(rel, None)

    for rel, (stage, recorded, seq) in sorted(latest.items()):
        full = Path(os.path.normpath(root / rel))
        if not full.exists():
            problems.append(f"artifact {rel} missing (recorded by stage {stage}, seq {seq})")
        elif recorded is None or file_sha256(full) != recorded:
            problems.append(f"artifact {rel} changed since stage {stage} (seq {seq})")
    return problems, n_entries, len(latest)


def verify(run_dir: Path | str | Node) -> list[str]:
    """Check a run's ledger and the artifacts it records.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory.

    Returns
    -------
    list of str
        One message per problem; empty when the ledger verifies. Problems: missing ledger
        or genesis, malformed lines, bad hashes (entry altered), seq gaps, broken chain
        (``prev_hash`` mismatch), and, for every path recorded as an output of its latest
        successful stage entry, a missing file or a changed sha256
        (``"artifact <path> changed since stage <stage> (seq N)"``).
    """
    return _verify(run_dir)[0]


# --------------------------------------------------------------------------- CLI


_PROG = "python -m tradingview_scraper.audit"


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{_PROG}: error: {message} (usage: {_PROG} verify <run_dir>)\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m tradingview_scraper.audit verify <run_dir>``: 0 verified, 1 problems, 2 bad usage."""
    parser = _OneLineParser(
        prog=_PROG,
        description="Verify the hash-chained audit ledger of a run directory.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    cmd = sub.add_parser("verify", help="verify audit.jsonl and the artifacts it records")
    cmd.add_argument("run_dir", help="the root run directory, e.g. data/runs/<run_id>")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        print(f"{_PROG}: error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    problems, n_entries, n_artifacts = _verify(args.run_dir)
    if problems:
        for problem in problems:
            print(problem)
        return 1
    print(f"audit OK: {n_entries} entries, {n_artifacts} artifacts verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
