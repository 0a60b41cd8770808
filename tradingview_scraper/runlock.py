"""One live driver per run directory: an exclusive ``flock`` on ``<run_dir>/.run.lock``.

The kernel releases a ``flock`` when the last descriptor of its holder closes, so a
driver killed by SIGKILL leaves no stale lock: the next run of the same command simply
takes it. The lock is per process and re-entrant within it (the runner takes it, then the
workflow's ``onstart`` hook in the same process finds it held).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from .errors import RunInProgressError
from .layout import Node, remove_partial_writes

# Lock file path -> descriptor holding the lock, for the locks this process holds.
_held: dict[str, int] = {}
_guard = threading.Lock()


def _lock_file(run_dir: Path | str) -> Path:
    return Node(Path(run_dir)).file("run_lock")


def acquire(run_dir: Path | str, run_id: str) -> bool:
    """Take the lock of run ``run_id`` (directory ``run_dir``) for this process.

    Creates the run directory. Right after taking the lock, deletes the temp files of
    atomic writes a killed earlier driver left behind.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    run_id : str
        The run's id, for the message.

    Returns
    -------
    bool
        True if the lock was taken now, False if this process already held it.

    Raises
    ------
    RunInProgressError
        Another live process holds the lock.
    """
    path = _lock_file(run_dir)
    key = os.path.abspath(path)
    with _guard:
        if key in _held:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
        _held[key] = fd
    remove_partial_writes(Path(run_dir))
    return True


def release(run_dir: Path | str) -> None:
    """Release this process's lock on ``run_dir`` (no-op if it does not hold it).

    The lock file stays: deleting it would let a waiting process lock a file nobody
    else sees.
    """
    with _guard:
        fd = _held.pop(os.path.abspath(_lock_file(run_dir)), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)

