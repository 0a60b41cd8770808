"""Ctrl-C for a run on Ray: a process-wide flag that makes every waiting job cancel its tasks."""

from __future__ import annotations

import signal
import threading
from typing import Any

# A signal is process-wide, so is this flag: a plain bool, since a signal handler must not
# take the locks an Event uses.
_requested = False


def interrupt() -> None:
    """Ask every job of this process waiting on Ray tasks to cancel them and fail (safe in a signal handler)."""
    global _requested
    _requested = True


def interrupted() -> bool:
    """Return whether :func:`interrupt` was called since the last :func:`watch_interrupts`."""
    return _requested


def watch_interrupts() -> None:
    """Make Ctrl-C (SIGINT) cancel the run's Ray tasks promptly; call at the start of a run.

    Snakemake answers Ctrl-C by waiting for its running jobs, and a job thread waiting for
    a Ray task does not see the KeyboardInterrupt. The handler calls :func:`interrupt`,
    then the handler it replaced (by default: raise KeyboardInterrupt). Idempotent; resets
    the flag. Off the main thread (or where SIGINT is ignored) it only resets the flag.
    """
    global _requested
    _requested = False
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or getattr(previous, "_cancels_ray_tasks", False):
        return

    def _on_sigint(signum: int, frame: Any) -> None:
        interrupt()
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL or a handler not set from Python
            raise KeyboardInterrupt

    _on_sigint._cancels_ray_tasks = True
    signal.signal(signal.SIGINT, _on_sigint)
