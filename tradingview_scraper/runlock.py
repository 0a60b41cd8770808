"""Who may touch a run directory: the run's own (a directory of another run or of no run is refused),
and one live driver at a time (an exclusive ``flock`` on ``<run_dir>/.run.lock``); and when another
run's files may be read (:func:`check_source_run`: a pin, a previous run).

The kernel releases a ``flock`` when the last descriptor of its holder closes, so a
driver killed by SIGKILL leaves no stale lock: the next run of the same command simply
takes it. The lock is per process and re-entrant within it (the runner takes it, then the
workflow's ``onstart`` hook in the same process finds it held).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from . import audit
from .errors import ConfigError, DataError, PipelineError, RunInProgressError
from .layout import Node, refuse_symlink, remove_partial_writes

#: Files a run directory may hold before its ledger exists: the locks and the stage logs
#: (a run killed before its first stage recorded anything).
_BEFORE_LEDGER = re.compile(r"^(\.run\.lock|audit\.jsonl\.lock|(.*/)?logs/[^/]+\.log)$")

# Lock file path -> (descriptor holding the lock, whether taking it created the run directory).
_held: dict[str, tuple[int, bool]] = {}
_guard = threading.Lock()


def _lock_file(run_dir: Path | str) -> Path:
    return Node(Path(run_dir)).file("run_lock")


def check_run_dir(run_dir: Path, run_id: str) -> None:
    """Refuse a run directory run ``run_id`` does not own; read only, creates nothing.

    Raises
    ------
    ConfigError
        The run directory is a symlink, or it exists and is not this run's: it holds
        another run's ledger, or files but no ledger (a user's folder, or a run whose
        ledger was removed: nothing in it can be verified).
    """
    run_dir = refuse_symlink(Path(run_dir), "run directory")
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ConfigError(f"run directory {run_dir} is a file; choose another run id")
        return
    if holder(run_dir) is not None:
        return  # a live run holds it: claiming it is refused as "in progress", a dry run may look
    if audit.genesis_for(run_dir, run_id, ConfigError) is not None:
        return
    stray = [
        rel
        for p in sorted(run_dir.rglob("*"))
        if (p.is_file() or p.is_symlink()) and not _BEFORE_LEDGER.match(rel := p.relative_to(run_dir).as_posix())
    ]
    if stray:
        raise ConfigError(
            f"{run_dir} holds files ({stray[0]}, ...) but no audit ledger (audit.jsonl): they cannot be verified "
            "and are not this run's; remove the directory or choose another run id"
        )


def acquire(run_dir: Path | str, run_id: str) -> bool:
    """Take the lock of run ``run_id`` (directory ``run_dir``, created if missing) for this process.

    Right after taking the lock, deletes the temp files of atomic writes a killed earlier
    driver left behind.

    Returns
    -------
    bool
        True if the lock was taken now, False if this process already held it.

    Raises
    ------
    RunInProgressError
        Another live process holds the lock.
    ConfigError
        The run directory or the lock file is a symlink (never followed: the lock would
        truncate the link's target), or the lock path is not a regular file.
    """
    path = _lock_file(run_dir)
    key = os.path.abspath(path)
    with _guard:
        if key in _held:
            return False
        refuse_symlink(Path(run_dir), "run directory")
        created = not Path(run_dir).exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if path.is_symlink():
                raise ConfigError(
                    f"lock file {path} is a symlink (to {os.readlink(path)}); refusing to follow it: remove the link"
                ) from None
            raise ConfigError(f"cannot open lock file {path}: {exc.strerror}; it must be a regular file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise RunInProgressError(
                f"run {run_id!r} is in progress (pid {owner} holds {path}); wait for it to finish, "
                "or choose another --run-id"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, created)
    remove_partial_writes(Path(run_dir))
    return True


def holder(run_dir: Path | str) -> str | None:
    """The pid of another live process holding ``run_dir``'s lock, else None; creates and locks nothing.

    Reads the kernel's lock table (``/proc/locks``) where there is one, so looking never
    blocks a run starting at the same moment; elsewhere a shared lock is tried and dropped.
    """
    path = _lock_file(run_dir)
    with _guard:
        if os.path.abspath(path) in _held:
            return None
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        table = None
    if table is not None:
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in table.splitlines():
            fields = line.split()
            if "FLOCK" in fields and where in fields and "->" not in fields:
                return fields[fields.index("FLOCK") + 3]
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
    finally:
        os.close(fd)
    return None


def release(run_dir: Path | str) -> None:
    """Release this process's lock on ``run_dir`` (no-op if it does not hold it).

    The lock file stays: deleting it would let a process that opened it meanwhile lock a
    file nobody else sees. Except when taking the lock created the run directory and it
    holds nothing but the lock (the run was refused before any stage ran): the lock file
    and the directory are deleted, still under the lock.
    """
    path = _lock_file(run_dir)
    with _guard:
        fd, created = _held.pop(os.path.abspath(path), (None, False))
    if fd is None:
        return
    try:
        if created and [p.name for p in Path(run_dir).iterdir()] == [path.name]:
            path.unlink()
            Path(run_dir).rmdir()
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


def check_source_run(
    run_dir: Path | str,
    files: Iterable[Path | str],
    *,
    who: str,
    hint: str,
    whole: bool = True,
    ledger_required: bool = True,
) -> None:
    """Refuse to read ``files`` of the earlier run in ``run_dir`` unless that run can be trusted.

    The run must not be reached through a symlink (nor may any of ``files`` be one), no live
    process may hold its lock (it is being written), its ledger must verify, every stage that
    failed in it must have run again successfully (it finished), and each of ``files`` must be
    an artifact its ledger records with the bytes recorded.

    Parameters
    ----------
    run_dir : path-like
        The earlier run's directory.
    files : iterable of path-like
        The files of it this run reads.
    who : str
        How the message names the source (``"previous_run 'x'"``, ``"sleeve 'a': pinned run_id 'x'"``).
    hint : str
        What to do instead, ending the message.
    whole : bool
        Check every artifact the ledger records (stat first), not only ``files``: the
        pre-flight check does, a stage re-checks only what it reads.
    ledger_required : bool
        Refuse a run without a ledger (False: such a run is read unverified, as pins of
        runs made before ledgers were).

    Raises
    ------
    DataError
        The first reason not to trust the run, in one line naming it.
    """
    run_dir = Path(run_dir)
    files = [Path(f) for f in files]
    if run_dir.is_symlink():
        raise DataError(
            f"{who}: run directory {run_dir} is a symlink (to {os.readlink(run_dir)}); runs are never followed "
            f"through links; {hint}"
        )
    for f in files:
        if f.is_symlink():
            raise DataError(f"{who}: {f} is a symlink (to {os.readlink(f)}); runs are never followed through links; {hint}")
    pid = holder(run_dir)
    if pid is not None:
        raise DataError(
            f"{who} is being written (pid {pid} holds {Node(run_dir).file('run_lock')}); wait for it to finish, "
            "or give a finished run"
        )
    if not Node(run_dir).file("audit").is_file():
        if ledger_required:
            raise DataError(
                f"{who} ({run_dir}) has no audit ledger (audit.jsonl): its files cannot be verified; {hint}"
            )
        return

    def audited(check, *args, **kwargs):
        """``check``'s answer; a ledger that does not verify (or a damaged input) is refused naming the source."""
        try:
            return check(*args, **kwargs)
        except PipelineError as exc:
            raise DataError(f"{who}: {exc}") from None

    failure = audited(audit.unfinished, run_dir)
    if failure is not None:
        raise DataError(f"{who} did not finish: {failure[1]} (audit seq {failure[0]}) and it never ran again successfully; {hint}")
    if not whole:
        audited(audit.check_inputs, run_dir, files, hint=hint)
        return
    mine = {os.path.normpath(os.path.relpath(f, run_dir)) for f in files}
    damages = sorted(audited(audit.damaged, run_dir), key=lambda d: d.record.path not in mine)
    if damages:
        raise DataError(f"{who}: {damages[0].line(run_dir)}; {hint}")
    known = set(audited(audit.recorded, run_dir))
    unknown = [f for f in files if os.path.normpath(os.path.relpath(f, run_dir)) not in known]
    if unknown:
        raise DataError(f"{who}: {unknown[0]} was not written by a stage of that run (no audit record); {hint}")
