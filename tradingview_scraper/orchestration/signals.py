"""SIGTERM stops a run the way Ctrl-C does: running tasks cancelled, cluster stopped, a resume hint."""

from __future__ import annotations

import signal
import threading

_terminated = False


def terminated() -> bool:
    """Whether SIGTERM arrived since the last :func:`reset`."""
    return _terminated


def reset() -> None:
    """Forget an earlier run's SIGTERM (call at the start of a run)."""
    global _terminated
    _terminated = False


def sigterm_like_ctrl_c() -> object | None:
    """Make SIGTERM act as SIGINT; return the handler it replaced (None off the main thread).

    Snakemake's scheduler answers SIGTERM by waiting for every running job (a sleeve waiting
    on Ray can take minutes) and Ray's C++ core dumps a stack on it; this handler instead
    hands the signal to SIGINT's current handler, which cancels the running Ray tasks and
    raises KeyboardInterrupt. The scheduler installs its own handler when it starts, so the
    workflow's ``onstart`` hook calls this again once it has.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def _on_sigterm(signum: int, frame) -> None:
        global _terminated
        _terminated = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, _on_sigterm)
