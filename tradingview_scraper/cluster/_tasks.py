"""A map's Ray tasks (submitted at once, collected as they finish, the rest cancelled at the first failure) and Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError, MetaError, PipelineError, SleeveError, one_line

logger = logging.getLogger(__name__)

#: Seconds between two looks at the interrupt flag, the shutdown and the deadline while waiting for tasks.
WAIT_SLICE_S = 0.5

TaskName = str | tuple[str, str]

#: What a map's tasks compute, and the error that names a failed one: a sleeve (named by
#: its id, or ``(sleeve id, part)``) or a meta node's optimization (``(node label, part)``).
TASK_ERRORS: dict[str, type[PipelineError]] = {"sleeve": SleeveError, "meta": MetaError}

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


def traced_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)`` inside a Ray worker; return it with where and how long it ran.

    The warnings it raised (once per place, as Python shows them by default) come back in
    the provenance's ``warnings`` instead of the worker's stderr, which Ray would forward
    to the driver's console: the caller writes them where they belong (the job's log). A
    worker runs one task at a time, so catching them here sees this task's alone.
    """
    import ray

    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = fn(*args, **kwargs)
    node = {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    return result, {**node, "worker_pid": os.getpid(), "duration_s": time.perf_counter() - started,
                    "warnings": list(dict.fromkeys(shown))}  # fmt: skip


def local_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)`` in this process (sequential mode): (result, provenance).

    Exceptions propagate unchanged; provenance has the keys of :meth:`Cluster.map`'s, with
    this process as the worker and ``mode`` "sequential". Warnings are not caught (they show
    as usual): catching them is process-wide and other threads of this process run too.
    """
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    where = {"node_id": None, "node_ip": None, "address": None, "mode": "sequential"}
    return result, {**where, "worker_pid": os.getpid(), "duration_s": time.perf_counter() - started, "warnings": []}


def label(names: Iterable[TaskName], kind: str = "sleeve") -> str:
    """``sleeve 'a'`` or ``sleeves ['a', 'b' (hrp)]`` (a task of part ``hrp`` of sleeve ``b``) for error
    messages; a meta node's task ``(label, part)``: ``meta profile 'm' (hrp)`` or ``meta nodes [...]``."""
    show = str if kind == "meta" else repr
    shown = sorted(f"{show(n[0])} ({n[1]})" if isinstance(n, tuple) else show(n) for n in names)
    if kind == "meta":
        return shown[0] if len(shown) == 1 else f"meta nodes [{', '.join(shown)}]"
    return f"sleeve {shown[0]}" if len(shown) == 1 else f"sleeves [{', '.join(shown)}]"


def check_map(items: list, kind: str, num_cpus: float, cluster_cpus: int | None) -> list[TaskName]:
    """The names of a map's ``(name, args, kwargs)`` items, once the map may run (see :meth:`Cluster.map`).

    Raises
    ------
    ConfigError
        An item is malformed, two share a name, or ``kind`` is unknown.
    SleeveError or MetaError
        The run was interrupted, or a task needs more CPUs than the private cluster has.
    """
    names = []
    for item in items:
        name = item[0] if isinstance(item, tuple | list) and len(item) == 3 else None
        pair = isinstance(name, tuple) and len(name) == 2 and all(isinstance(n, str) for n in name)
        if not (isinstance(name, str) or pair):
            raise ConfigError(f"map item {item!r} is invalid: give (name, args, kwargs)")
        names.append(name)
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"map items have duplicate names {duplicates}: names must be unique")
    if kind not in TASK_ERRORS:
        raise ConfigError(f"map kind={kind!r} is invalid: give one of {', '.join(TASK_ERRORS)}")
    if names and interrupted():
        raise TASK_ERRORS[kind](f"{label(names, kind)} not started: the run was interrupted (SIGINT)")
    if names and cluster_cpus is not None and num_cpus > cluster_cpus:
        raise TASK_ERRORS[kind](f"{label(names, kind)} needs num_cpus={num_cpus:g} (backtest.num_cpus) but the "
                                f"private Ray cluster has {cluster_cpus} CPUs: lower it, or use an external "
                                "cluster with larger nodes")  # fmt: skip
    return names


def run_tasks(remote: Any, fn: Callable[..., Any], items: list, names: list[TaskName], *, num_cpus: float,
              max_retries: int, timeout_s: float | None, closing: Callable[[], bool], kind: str,
              where: dict) -> dict:  # fmt: skip
    """Submit one task per item, then collect them as they finish (see :meth:`Cluster.map`).

    A pandas argument goes to the object store once (``ray.put``), however many tasks take
    it; each task's provenance gets ``where`` (the cluster's address and mode).
    """
    import ray

    pd = sys.modules.get("pandas")
    frames = (pd.DataFrame, pd.Series) if pd is not None else ()
    puts: dict[int, tuple] = {}  # id -> (reference, the frame, kept alive so that ids stay unique)

    def put(value: Any) -> Any:
        if not isinstance(value, frames):
            return value
        if id(value) not in puts:
            puts[id(value)] = (ray.put(value), value)
        return puts[id(value)][0]

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    refs: dict[Any, TaskName] = {}
    for name, args, kwargs in items:
        title = f"{kind}:{name if isinstance(name, str) else '/'.join(name)}"
        task = remote.options(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False, name=title)
        try:
            refs[task.remote(fn, *map(put, args), **{k: put(v) for k, v in (kwargs or {}).items()})] = name
        except Exception as err:
            _cancel(refs)
            raise TASK_ERRORS[kind](f"{label([name], kind)} could not be submitted: {one_line(err)}") from err
    done: dict[TaskName, tuple[Any, dict]] = {}
    pending = list(refs)
    while pending:
        reason = None
        if interrupted():
            reason = "interrupted (SIGINT): its Ray task was cancelled"
        elif closing():
            reason = "interrupted: the run's Ray cluster is shutting down"
        elif deadline is not None and time.monotonic() >= deadline:
            reason = f"timed out after {timeout_s:g} s and was cancelled"
        if reason:
            _cancel(pending)
            raise TASK_ERRORS[kind](f"{label((refs[r] for r in pending), kind)} {reason}")
        slice_s = WAIT_SLICE_S if deadline is None else max(0.0, min(WAIT_SLICE_S, deadline - time.monotonic()))
        ready, pending = ray.wait(pending, num_returns=1, timeout=slice_s, fetch_local=False)
        for ref in ready:
            try:
                result, provenance = ray.get(ref)
            except Exception as err:
                _cancel(pending)
                raise _task_error(refs[ref], err, max_retries, kind) from err
            done[refs[ref]] = (result, {**provenance, **where})
    return {name: done[name] for name in names}


def _cancel(refs: Iterable) -> None:
    """Cancel tasks, killing their workers; errors of a cluster going away are ignored."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # the cluster may already be gone
            logger.debug("cancel failed: %s", exc)


def _task_error(name: TaskName, err: Exception, max_retries: int, kind: str) -> PipelineError:
    """A Ray error as one line naming the task (a SleeveError for a sleeve's task, a MetaError for a meta node's)."""
    from ray import exceptions as rex

    who, error = label([name], kind), TASK_ERRORS[kind]
    if isinstance(err, rex.RayTaskError):  # the exception ``fn`` raised, where Ray kept it
        return error(f"{who} failed: {one_line(getattr(err, 'cause', None) or str(err))}")
    if isinstance(err, rex.TaskCancelledError):
        return error(f"{who} was cancelled")
    if isinstance(err, rex.WorkerCrashedError | rex.OutOfMemoryError | rex.NodeDiedError | rex.LocalRayletDiedError):
        retries = f"{max_retries} retr{'y' if max_retries == 1 else 'ies'}"
        return error(f"{who} failed: worker died ({type(err).__name__}) after {retries}")
    return error(f"{who} failed: {type(err).__name__}: {one_line(str(err))[:300]}")
