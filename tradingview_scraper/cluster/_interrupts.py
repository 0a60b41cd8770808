"""Ctrl-C and SIGTERM for a run on Ray: process-wide flags that make every waiting job cancel its tasks."""

from __future__ import annotations

import signal
import threading
from typing import Any

# A signal is process-wide, so are these flags: plain bools, since a signal handler must not
# take the locks an Event uses.
_requested = False
_terminated = False


def interrupt() -> None:
    """Ask every job of this process waiting on Ray tasks to cancel them and fail (safe in a signal handler)."""
    global _requested
    _requested = True


def interrupted() -> bool:
    """Return whether :func:`interrupt` was called since the last :func:`watch_interrupts`."""
    return _requested


def terminated() -> bool:
    """Return whether SIGTERM arrived since the last :func:`watch_interrupts` that reset the flags."""
    return _terminated


def watch_interrupts(*, reset: bool = True) -> Any:
    """Make Ctrl-C (SIGINT) and SIGTERM cancel the run's Ray tasks promptly; call at the start of a run.

    Snakemake answers Ctrl-C by waiting for its running jobs, and a job thread waiting for
    a Ray task does not see the KeyboardInterrupt. The SIGINT handler calls
    :func:`interrupt`, then the handler it replaced (by default: raise KeyboardInterrupt);
    it is installed once. SIGTERM is handed to SIGINT's current handler: Snakemake's
    scheduler would wait for every running job and Ray's C++ core would dump a stack. The
    scheduler sets its own SIGTERM handler when it starts, so a run calls this again then.
    Off the main thread only the flags are reset.

    Parameters
    ----------
    reset : bool
        Forget an earlier interrupt or SIGTERM (False: the run is already under way).

    Returns
    -------
    object
        The SIGTERM handler replaced (None off the main thread), for the caller to put back.
    """
    global _requested, _terminated
    if reset:
        _requested = _terminated = False
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN and not getattr(previous, "_cancels_ray_tasks", False):

        def _on_sigint(signum: int, frame: Any) -> None:
            interrupt()
            if callable(previous):
                previous(signum, frame)
            else:  # SIG_DFL or a handler not set from Python
                raise KeyboardInterrupt

        _on_sigint._cancels_ray_tasks = True
        signal.signal(signal.SIGINT, _on_sigint)
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    raise KeyboardInterrupt
