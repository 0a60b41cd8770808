"""Ray compute backend: a private loopback head (or an external cluster) that runs sleeve tasks."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tradingview_scraper.errors import ConfigError, PipelineError, SleeveError

__all__ = [
    "RayBackend",
    "backend_from_config",
    "interrupted",
    "local_call",
    "shutdown_all",
    "watch_interrupts",
]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK = "127.0.0.1"
_LARGE_ARG_BYTES = 1 << 20
_HEAD_START_TIMEOUT_S = 60.0
# The head's session is killed outright (SIGTERM, then SIGKILL at once): nothing of it is
# kept (its temp dir is deleted next) and Ray's own orderly stop took 1.3 s per run.
_HEAD_TERM_GRACE_S = 0.0
_REAPER_TERM_GRACE_S = 3.0
_REAPER_POLL_S = 0.5
_WAIT_SLICE_S = 0.5
# Ray's unix sockets live at <temp dir>/session_<date>_<time>_<micros>_<pid>/sockets/<name>:
# about 70 characters below the temp dir, and Linux allows 107 in all.
_SOCKET_SUFFIX_CHARS = 72
_UNIX_SOCKET_MAX_CHARS = 107
_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")

logger = logging.getLogger(__name__)

# Ray allows one connection per process: the backend holding it.
_connected: RayBackend | None = None
_connected_lock = threading.Lock()

# Set by the SIGINT handler of watch_interrupts(); a plain bool, since a signal handler
# must not take the locks an Event uses.
_interrupt_requested = False


# ----------------------------------------------------------------------------- tasks


def _traced_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)`` inside a Ray worker and return it with where it ran.

    Parameters
    ----------
    fn : callable
        The sleeve function; must be importable by the workers (or picklable by value).
    *args, **kwargs
        Its arguments; top-level ``ObjectRef`` arguments arrive resolved.

    Returns
    -------
    result : Any
        What ``fn`` returned.
    provenance : dict
        ``node_id``, ``node_ip``, ``worker_pid`` and ``duration_s`` of the call.
    """
    import ray

    started = time.perf_counter()
    result = fn(*args, **kwargs)
    provenance = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "worker_pid": os.getpid(),
        "duration_s": time.perf_counter() - started,
    }
    return result, provenance


def local_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)`` in this process (sequential mode).

    Parameters
    ----------
    fn : callable
        The function to call.
    *args, **kwargs
        Its arguments.

    Returns
    -------
    result : Any
        What ``fn`` returned; its exceptions propagate unchanged.
    provenance : dict
        Same keys as :meth:`RayBackend.run`: ``node_id`` (None), ``node_ip`` (None),
        ``worker_pid`` (this process), ``address`` (None), ``mode`` ("sequential")
        and ``duration_s``.
    """
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    provenance = {
        "node_id": None,
        "node_ip": None,
        "worker_pid": os.getpid(),
        "duration_s": time.perf_counter() - started,
        "address": None,
        "mode": "sequential",
    }
    return result, provenance


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return sock.getsockname()[1]


def _validate_address(address: str, source: str) -> str:
    """Return ``address`` stripped, or raise ConfigError if it is not an explicit address."""
    value = address.strip()
    if value.lower() in {"", "auto", "local"} or not _HOST_PORT.match(value):
        raise ConfigError(
            f"{source}={address!r} is not an explicit Ray address: give 'host:port' or "
            "'ray://host:port' ('auto' and 'local' are not allowed), or leave it unset "
            "to start a private loopback cluster"
        )
    return value


TaskName = str | tuple[str, str]


def _name(name: TaskName) -> str:
    """Return ``'a'`` for a sleeve's task, ``'a' (hrp)`` for one part ``(sleeve, part)`` of it."""
    return repr(name) if isinstance(name, str) else f"{name[0]!r} ({name[1]})"


def _valid_name(name: object) -> bool:
    return isinstance(name, str) or (
        isinstance(name, tuple) and len(name) == 2 and all(isinstance(n, str) for n in name)
    )


def _label(names: Iterable[TaskName]) -> str:
    """Return ``sleeve 'a'`` or ``sleeves ['a', 'b' (hrp)]`` for error messages."""
    shown = sorted(_name(n) for n in names)
    return f"sleeve {shown[0]}" if len(shown) == 1 else f"sleeves [{', '.join(shown)}]"


def _one_line(text: str) -> str:
    """Join the non-blank lines of ``text`` with spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _log_tail(path: Path, lines: int = 25) -> str:
    """Return the last ``lines`` lines of a log file, or a note if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def _child_env() -> dict[str, str]:
    """Return this process's environment plus the project root on PYTHONPATH.

    Ray workers import the project's code, so every process this module starts
    (a head, a node, the reaper) gets it.
    """
    env = dict(os.environ)
    paths = [str(_PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _node_env(token_path: Path) -> dict[str, str]:
    """Return the environment of a loopback Ray node authenticated by ``token_path``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every listener on 127.0.0.1, token
    authentication reads the token file (never ``RAY_AUTH_TOKEN``), SIGTERM stops the
    node without a drain, and a ``RAY_ADDRESS`` of ours is not inherited.
    """
    env = _child_env()
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _head_command(port: int, num_cpus: int, temp_dir: Path) -> list[str]:
    """Return the ``ray start --head --block`` command of a loopback head on ``port``.

    The Ray client server defaults to port 10001 with SO_REUSEPORT: two heads would
    share it, so each head gets a free port of its own.
    """
    client_port = _free_port()
    while client_port == port:
        client_port = _free_port()
    return [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        f"--node-ip-address={_LOOPBACK}", f"--port={port}",
        f"--ray-client-server-port={client_port}", f"--num-cpus={num_cpus}",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        # A fixed-size private cluster has nothing to autoscale (no monitor process), and
        # its workers' output is not streamed to the driver (no log monitor; a task's
        # error still is): two Python processes fewer, about 0.5 s of CPU per run.
        "--no-monitor", "--include-log-monitor=false",
    ]  # fmt: skip


def _alive_nodes(address: str, token: str, timeout_s: float = 1.0) -> int:
    """Return how many alive nodes the GCS at ``address`` reports, asked with ``token``.

    Raises
    ------
    grpc.RpcError
        If the GCS does not answer within ``timeout_s`` or refuses the token.
    """
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        reply = stub.GetAllNodeInfo(
            gcs_service_pb2.GetAllNodeInfoRequest(),
            timeout=timeout_s,
            metadata=[("authorization", f"Bearer {token}")],
        )
    return sum(node.state == gcs_pb2.GcsNodeInfo.ALIVE for node in reply.node_info_list)


def _grpc_reason(exc: Exception) -> str:
    """Return ``CODE: details`` of a gRPC error, else the exception's text."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)


def _refresh_ray_auth_state() -> None:
    """Make an already imported Ray re-read the auth mode and token from the environment.

    Ray caches both at first use; a second cluster in the same process (or an
    environment set after ``import ray``) would otherwise use stale values. The
    config is refreshed before the token cache is dropped, as Ray's own test
    utilities do.
    """
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # pragma: no cover - other Ray versions
        return
    try:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception as exc:  # pragma: no cover - private API drift
        logger.debug("could not refresh Ray auth state: %s", exc)


def _bootstrap_address(address: str) -> str:
    """Return the ``host:port`` that ``ray.init(address=...)`` will actually dial."""
    try:
        from ray._private import services

        return services.canonicalize_bootstrap_address(address) or address
    except Exception:  # pragma: no cover - other Ray layouts
        return address


def _process_is_alive(pid: int, create_time: float | None) -> bool:
    """Return whether ``pid`` is a live (non-zombie) process started at ``create_time``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _session_pids(sid: int) -> list[int]:
    """Return the live, non-zombie processes of session ``sid`` (never this process)."""
    import psutil

    me = os.getpid()
    members = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            if os.getsid(pid) == sid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.append(pid)
        except (OSError, psutil.Error):
            continue
    return members


def _kill_session(sid: int, grace_s: float, *, leader: subprocess.Popen | None = None) -> None:
    """Stop every process of the session led by ``sid`` (the head's PID): SIGTERM, then SIGKILL.

    Ray's workers get process groups of their own inside the head's session, so
    the SIGKILL goes to the head's process group and to every remaining process
    of the session. Signals are sent only while the session has members: its ID
    cannot have been reused by then.

    Parameters
    ----------
    sid : int
        PID of the session leader (``ray start``); also its process-group ID.
    grace_s : float
        Seconds to wait after SIGTERM before SIGKILL.
    leader : subprocess.Popen, optional
        The leader, when it is our child: SIGTERM goes to it alone (Ray then stops
        its children) and it is reaped. Otherwise the whole group gets SIGTERM.
    """
    if leader is not None:
        if leader.poll() is None:
            leader.terminate()
    elif _session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        if not _session_pids(sid):
            break
        time.sleep(0.1)
    if _session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and _session_pids(sid):
        time.sleep(0.05)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=1)


def _reap(driver_pid: int, driver_started: float | None, head_sid: int, remove: str | None) -> None:
    """Wait for the driver to die, then stop the head's session and remove its files.

    Parameters
    ----------
    driver_pid : int
        PID of the process that started the head.
    driver_started : float or None
        Its creation time (guards against PID reuse).
    head_sid : int
        PID of the head, leader of its own session and process group.
    remove : str or None
        Directory (temp dir and token file) to delete afterwards.
    """
    while _process_is_alive(driver_pid, driver_started):
        time.sleep(_REAPER_POLL_S)
    _kill_session(head_sid, _REAPER_TERM_GRACE_S)
    if remove:
        shutil.rmtree(remove, ignore_errors=True)


# ----------------------------------------------------------------------------- backend


class RayBackend:
    """Run sleeve computations as Ray tasks on one cluster shared by a whole workflow run.

    Nothing starts at construction. The first :meth:`run` (or :meth:`map`) either
    connects to an external cluster or starts a private head bound to 127.0.0.1
    with token authentication, a per-run token file and a watchdog process that
    stops the head if this process dies, even by SIGKILL.

    Parameters
    ----------
    address : str, optional
        Address of an external cluster, ``"host:port"`` or ``"ray://host:port"``.
        When None, ``RAY_ADDRESS`` is read from the environment at first use; when
        that is unset too, a private head is started. ``"auto"`` and ``"local"``
        are rejected. An external cluster is never stopped by this class; its
        auth settings (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``) come from the
        environment.
    num_cpus : int, optional
        CPUs of the private head; default ``os.cpu_count()``, and never more.
        Ignored for an external cluster.
    session_dir : str or Path, optional
        Parent directory of the private head's temp dir; default ``/tmp``. It
        must be short: Ray's unix sockets live below it (108-character limit).

    Attributes
    ----------
    head_start_s : float or None
        Seconds from launching the private head until its GCS port accepted.
    connect_s : float or None
        Seconds ``ray.init`` took to join the cluster.

    Raises
    ------
    ConfigError
        If ``address``, ``num_cpus`` or ``session_dir`` is invalid, or ``num_cpus``
        exceeds this machine's CPUs for a private head.

    Notes
    -----
    Ray allows one connection per process, so only one backend can be active in
    a process at a time; :func:`backend_from_config` hands every Snakemake job
    thread of a run the same instance. Methods are thread-safe.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        session_dir: str | Path | None = None,
    ) -> None:
        if address is not None:
            address = _validate_address(address, "address")
        if num_cpus is not None and (
            isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
        ):
            raise ConfigError(f"num_cpus={num_cpus!r} is invalid: give a positive integer or None")
        machine = os.cpu_count() or 1
        private = address is None and not os.environ.get("RAY_ADDRESS")
        if private and num_cpus is not None and num_cpus > machine:
            raise ConfigError(
                f"num_cpus={num_cpus} (config ray_num_cpus) exceeds this machine's {machine} CPUs: "
                f"a private Ray cluster must not oversubscribe it; give at most {machine}, or "
                "the address of an external cluster"
            )
        parent = Path(session_dir) if session_dir is not None else Path("/tmp")
        # The run dir adds "/tvr" + 8 random characters, Ray's temp dir "/r".
        if len(str(parent.resolve())) + 14 + _SOCKET_SUFFIX_CHARS > _UNIX_SOCKET_MAX_CHARS:
            raise ConfigError(
                f"session_dir={str(session_dir)!r} is too long for Ray's unix sockets: "
                f"keep it under {_UNIX_SOCKET_MAX_CHARS - _SOCKET_SUFFIX_CHARS - 14} characters "
                "(e.g. /tmp)"
            )
        self._requested_address = address
        self._requested_cpus = num_cpus
        self._session_parent = parent
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._owner_pid = os.getpid()
        self._started = False
        self._start_error: PipelineError | None = None
        self._mode: str | None = None
        self._address: str | None = None
        self._head: subprocess.Popen | None = None
        self._reaper: subprocess.Popen | None = None
        self._temp_dir: Path | None = None
        self._token_path: Path | None = None
        self._saved_env: dict[str, str | None] = {}
        self._remote = None
        self._starter: threading.Thread | None = None
        self._ray_initialized = False
        self._saved_enable_cluster = False
        self.head_start_s: float | None = None
        self.connect_s: float | None = None

    # -- public API -------------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str,
        num_cpus: float = 1,
        max_retries: int = 2,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> tuple[Any, dict]:
        """Run ``fn(*args, **kwargs)`` as one Ray task and wait for it.

        Parameters
        ----------
        fn : callable
            The sleeve function. Workers import it by module, so it must live in
            an importable module (the private head has the project root on its
            ``PYTHONPATH``).
        *args, **kwargs
            Its arguments. A pandas DataFrame or Series above about 1 MB is put in
            the object store once. The keywords ``name``, ``num_cpus``,
            ``max_retries`` and ``timeout_s`` belong to this method.
        name : str
            The sleeve's name, used in the task name and in error messages.
        num_cpus : float, default 1
            CPUs the task reserves.
        max_retries : int, default 2
            Retries when the worker process dies; exceptions raised by ``fn`` are
            never retried.
        timeout_s : float, optional
            Seconds to wait; the task is cancelled when exceeded.

        Returns
        -------
        result : Any
            What ``fn`` returned.
        provenance : dict
            ``node_id``, ``node_ip``, ``worker_pid``, ``duration_s`` of the task and
            the cluster's ``address`` and ``mode`` ("private" or "external").

        Raises
        ------
        SleeveError
            If ``fn`` raised (its type and message are quoted), its worker died
            beyond the retries, the timeout passed or the backend shut down.
        PipelineError
            If the cluster cannot be started or reached.
        """
        results = self.map(
            fn,
            [(name, args, kwargs)],
            num_cpus=num_cpus,
            max_retries=max_retries,
            timeout_s=timeout_s,
        )
        return results[name]

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[tuple[str, tuple, dict]],
        *,
        num_cpus: float = 1,
        max_retries: int = 2,
        timeout_s: float | None = None,
    ) -> dict[str, tuple[Any, dict]]:
        """Run ``fn`` once per item, all tasks submitted before any is collected.

        Parameters
        ----------
        fn : callable
            The function every task runs (see :meth:`run`).
        items : iterable of (name, args, kwargs)
            One task per item; names must be unique. A name is a sleeve id, or
            ``(sleeve id, part)`` for one of several tasks of a sleeve (errors then
            read ``sleeve 'a' (part) failed: ...``). A large DataFrame shared by
            several items is put in the object store once.
        num_cpus : float, default 1
            CPUs each task reserves.
        max_retries : int, default 2
            Retries of a task whose worker died.
        timeout_s : float, optional
            Seconds for all tasks together.

        Returns
        -------
        dict
            ``{name: (result, provenance)}`` in the order of ``items``.

        Raises
        ------
        ConfigError
            If two items share a name or an item is malformed.
        SleeveError
            At the first failure (in completion order), naming that item; the
            remaining tasks are cancelled. Also on timeout or interruption (SIGINT, see
            :func:`watch_interrupts`), naming the pending items, and when a private
            cluster has fewer CPUs than ``num_cpus``.
        PipelineError
            If the cluster cannot be started or reached.
        """
        items = list(items)
        names: list[str] = []
        for item in items:
            if not (isinstance(item, tuple | list) and len(item) == 3 and _valid_name(item[0])):
                raise ConfigError(f"map item {item!r} is invalid: give (name, args, kwargs)")
            names.append(item[0])
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"map items have duplicate names {duplicates}: names must be unique")
        if not items:
            return {}
        if _interrupt_requested:
            raise SleeveError(f"{_label(names)} not started: the run was interrupted (SIGINT)")
        private_cpus = self._private_cpus()
        if private_cpus is not None and num_cpus > private_cpus:
            raise SleeveError(
                f"{_label(names)} needs num_cpus={num_cpus:g} (backtest.num_cpus) but the "
                f"private Ray cluster has {private_cpus} CPUs: lower it, or use an external "
                "cluster with larger nodes"
            )
        with self._inflight_cond:
            self._inflight += 1
        try:
            self._ensure_started()
            import ray

            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            puts: dict[int, Any] = {}
            refs: dict[Any, str] = {}
            for name, args, kwargs in items:
                args = tuple(self._maybe_put(a, puts) for a in args)
                kwargs = {k: self._maybe_put(v, puts) for k, v in (kwargs or {}).items()}
                task = self._remote.options(
                    num_cpus=num_cpus,
                    max_retries=max_retries,
                    retry_exceptions=False,
                    name=f"sleeve:{name if isinstance(name, str) else '/'.join(name)}",
                )
                try:
                    refs[task.remote(fn, *args, **kwargs)] = name
                except Exception as err:
                    self._cancel(list(refs))
                    raise SleeveError(
                        f"sleeve {_name(name)} could not be submitted: {type(err).__name__}: "
                        f"{_one_line(err)}"
                    ) from err
            done: dict[str, tuple[Any, dict]] = {}
            pending = list(refs)
            while pending:
                ready, pending = self._wait_one(pending, deadline, timeout_s, refs)
                for ref in ready:
                    name = refs[ref]
                    try:
                        result, provenance = ray.get(ref)
                    except Exception as err:
                        self._cancel(pending)
                        raise self._sleeve_error(name, err, max_retries) from err
                    provenance.update(address=self._address, mode=self._mode)
                    done[name] = (result, provenance)
            return {name: done[name] for name in names}
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()

    def start_in_background(self) -> None:
        """Start (or connect to) the cluster in a background thread, once.

        For a caller that knows tasks are coming: the head boots while it does other work
        (the workflow's pre-flight checks, the first jobs), and the first task waits for it
        rather than starting it. A failure to start is raised by that first task.
        """
        if self._started or self._closing.is_set() or self._start_error is not None or self._starter:
            return  # (two racing first calls start two threads: the second finds it started)
        self._starter = threading.Thread(target=self._start_quietly, name="tvs-ray-start", daemon=True)
        self._starter.start()

    def _start_quietly(self) -> None:
        # The error is recorded (PipelineError) or met again by the first task's own start.
        with contextlib.suppress(Exception):
            self._ensure_started()

    def info(self) -> dict:
        """Describe the cluster.

        Returns
        -------
        dict
            ``mode`` ("private" or "external"), ``address``, ``head_pid`` (None if
            external or not started), ``num_cpus`` (total CPUs of the cluster once
            connected, else the requested count), ``token_path`` (private head's
            token file), ``started`` (bool) and ``reaper_pid``.
        """
        address = self._address
        mode = self._mode
        if not self._started:
            address = self._requested_address or os.environ.get("RAY_ADDRESS") or None
            mode = "external" if address else "private"
        num_cpus = self.capacity()
        if num_cpus is None:
            num_cpus = self._requested_cpus
        return {
            "mode": mode,
            "address": address,
            "head_pid": self._head.pid if self._head is not None else None,
            "num_cpus": num_cpus,
            "token_path": str(self._token_path) if self._token_path else None,
            "started": self._started,
            "reaper_pid": self._reaper.pid if self._reaper is not None else None,
        }

    def capacity(self, *, connect: bool = False) -> int | None:
        """Return how many CPUs the cluster offers to tasks.

        A private head's CPUs are known without starting it: ``num_cpus``, by default
        every CPU of this machine. An external cluster is asked once connected.

        Parameters
        ----------
        connect : bool, default False
            Connect to an external cluster now if not yet connected (a private head
            is never started by this method).

        Returns
        -------
        int or None
            Total CPUs; None for an external cluster not connected to.

        Raises
        ------
        ConfigError
            If ``RAY_ADDRESS`` is not an explicit address (only with ``connect``).
        PipelineError
            If the external cluster cannot be reached (only with ``connect``).
        """
        private = self._private_cpus()
        if private is not None:
            return private
        if connect and not self._started:
            self._ensure_started()
        if self._started and not self._closing.is_set():
            import ray

            return int(ray.cluster_resources().get("CPU", 0))
        return None

    def _private_cpus(self) -> int | None:
        """CPUs of the private head this backend runs (or will start); None if external."""
        external = self._requested_address is not None or (
            self._mode != "private" and bool(os.environ.get("RAY_ADDRESS"))
        )
        return None if external else self._requested_cpus or os.cpu_count() or 1

    def shutdown(self) -> None:
        """Disconnect; stop the private head, its watchdog and files. Idempotent.

        An external cluster is only disconnected from, never stopped. Tasks still
        being waited for in other threads fail with SleeveError. The private head
        gets SIGTERM, then at once SIGKILL for its whole session. After
        shutdown, :meth:`run` raises PipelineError.
        """
        global _connected
        self._closing.set()
        if os.getpid() != self._owner_pid:
            return  # a forked child: the cluster belongs to the parent
        with self._inflight_cond:
            self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=2 * _WAIT_SLICE_S + 1)
        with self._lock:
            atexit.unregister(self.shutdown)
            if self._ray_initialized:
                import ray

                try:
                    ray.shutdown()
                except Exception as exc:  # pragma: no cover - best effort at exit
                    logger.warning("ray.shutdown() failed: %s", exc)
                self._ray_initialized = False
            self._started = False
            self._restore_env()
            with _connected_lock:
                if _connected is self:
                    _connected = None
            self._stop_private_head()

    # -- startup ----------------------------------------------------------------------

    def _ensure_started(self) -> None:
        """Connect or start the cluster once, whichever thread gets here first."""
        if self._closing.is_set():
            raise PipelineError("the Ray backend was shut down; create a new one to run more tasks")
        if self._started:
            return
        global _connected
        with self._lock:
            if self._closing.is_set():
                raise PipelineError(
                    "the Ray backend was shut down; create a new one to run more tasks"
                )
            if self._started:
                return
            if self._start_error is not None:
                raise PipelineError(f"the Ray backend failed to start earlier: {self._start_error}")
            if os.getpid() != self._owner_pid:
                raise PipelineError("a Ray backend cannot be used from a forked child process")
            address = self._requested_address
            if address is None and os.environ.get("RAY_ADDRESS"):
                address = _validate_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
            with _connected_lock:
                if _connected is not None and _connected is not self:
                    raise PipelineError(
                        "another RayBackend is connected in this process (Ray allows one "
                        "connection per process): call its shutdown() first or share it "
                        "through backend_from_config()"
                    )
                _connected = self
            try:
                ray_module = sys.modules.get("ray")
                if ray_module is not None and ray_module.is_initialized():
                    raise PipelineError(
                        "Ray is already initialized in this process by other code: the "
                        "RayBackend must own the process's Ray connection"
                    )
                if address is None:
                    self._start_private_head()
                else:
                    self._mode, self._address = "external", address
                    self._connect(address, private=False)
            except BaseException as exc:
                if isinstance(exc, PipelineError):
                    self._start_error = exc
                if self._ray_initialized:
                    import ray

                    ray.shutdown()
                    self._ray_initialized = False
                with _connected_lock:
                    _connected = None
                self._restore_env()
                self._stop_private_head()
                raise
            atexit.register(self.shutdown)
            self._started = True

    def _start_private_head(self) -> None:
        """Start ``ray start --head --block`` on loopback with its reaper, then connect."""
        self._session_parent.mkdir(parents=True, exist_ok=True)
        # A private (0700) run dir holds the token and Ray's temp dir: Ray makes its
        # temp dir world-writable, the run dir keeps other users out of both.
        self._temp_dir = Path(tempfile.mkdtemp(prefix="tvr", dir=self._session_parent))
        self._token_path = self._temp_dir / "auth_token"
        fd = os.open(self._token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        port = _free_port()
        self._mode, self._address = "private", f"{_LOOPBACK}:{port}"
        head_log = self._temp_dir / "head.log"
        started = time.monotonic()
        with open(head_log, "wb") as log:
            self._head = subprocess.Popen(
                _head_command(port, self.capacity(), self._temp_dir / "r"),
                env=_node_env(self._token_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._start_reaper()
        # Before anything here imports ray: Ray reads some of these at import time.
        self._set_driver_env(
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self._token_path),
            RAY_AUTH_TOKEN=None,
        )
        self._wait_for_head(head_log, started + _HEAD_START_TIMEOUT_S)
        self.head_start_s = time.monotonic() - started
        try:
            self._connect(self._address, private=True)
        except PipelineError as exc:
            raise PipelineError(f"{exc}; last lines of {head_log}:\n{_log_tail(head_log)}") from exc

    def _wait_for_head(self, head_log: Path, deadline: float) -> None:
        """Poll the head's GCS, with the token, until its node is alive.

        A bare TCP check is not enough: ``ray.init`` against a port that accepts but
        does not answer (a port taken in between by another program) retries for
        minutes. The GCS is asked for its nodes over gRPC with a short timeout
        instead, which also proves the token works.

        Raises
        ------
        PipelineError
            If the head exits or its node is not alive by ``deadline`` (the message
            ends with the tail of the head's log), or the run is interrupted (SIGINT).
        """

        def failure(reason: str) -> PipelineError:
            return PipelineError(
                f"the private Ray head {reason}; last lines of {head_log}:\n{_log_tail(head_log)}"
            )

        token = self._token_path.read_text().strip()
        last_error = "no answer"
        while True:
            if self._head.poll() is not None:
                raise failure(
                    f"exited with code {self._head.returncode} while starting on {self._address}"
                )
            if _interrupt_requested or self._closing.is_set():
                raise PipelineError(
                    f"the private Ray head on {self._address} was stopped while starting: "
                    "the run was interrupted"
                )
            try:
                if _alive_nodes(self._address, token) > 0:
                    return
                last_error = "GCS up, node not registered yet"
            except Exception as exc:  # grpc.RpcError or OSError while the GCS starts
                last_error = _grpc_reason(exc)
            if time.monotonic() > deadline:
                raise failure(
                    f"did not come up on {self._address} within {_HEAD_START_TIMEOUT_S:.0f} s "
                    f"({_one_line(last_error)})"
                )
            time.sleep(0.1)

    def _start_reaper(self) -> None:
        """Start the watchdog that stops the head when this process dies."""
        import psutil

        cmd = [
            sys.executable, "-m", "tradingview_scraper.orchestration.compute",
            "--reap", str(os.getpid()), str(self._head.pid),
            "--driver-started", repr(psutil.Process().create_time()),
            "--remove", str(self._temp_dir),
        ]  # fmt: skip
        self._reaper = subprocess.Popen(
            cmd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def _connect(self, address: str, *, private: bool) -> None:
        """``ray.init`` to ``address`` and prepare the task wrapper."""
        import ray

        _refresh_ray_auth_state()
        started = time.monotonic()
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if private:
            options["_node_ip_address"] = _LOOPBACK
        hint = (
            ""
            if private
            else " (an external cluster with token auth needs RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN in this process's environment)"
        )
        if private:
            self._pin_loopback_node_ip()
        if not address.startswith("ray://"):
            # ray.init retries an unreachable GCS for minutes: fail fast instead.
            target = _bootstrap_address(address)
            host, _, port = target.rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
            except OSError as exc:
                rewritten = (
                    f" (Ray rewrote {address!r} to {target!r}: set "
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray to keep loopback)"
                    if target != address
                    else ""
                )
                raise PipelineError(
                    f"cannot reach the Ray cluster at {address!r}: {exc}{rewritten}; check the "
                    "address (config key or RAY_ADDRESS) and that the cluster is running"
                ) from exc
        ray_log = logging.getLogger("ray._private.worker")
        ray_log.addFilter(_drop_sigterm_note)
        try:
            ray.init(address=address, **options)
        except Exception as exc:
            raise PipelineError(
                f"cannot connect to the Ray cluster at {address!r}: {type(exc).__name__}: "
                f"{_one_line(exc)}{hint}"
            ) from exc
        finally:
            ray_log.removeFilter(_drop_sigterm_note)
        self._ray_initialized = True
        self.connect_s = time.monotonic() - started
        self._remote = ray.remote(_traced_call)

    def _pin_loopback_node_ip(self) -> None:
        """Make Ray in this process treat 127.0.0.1 as this node's address.

        Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import. If ray was
        imported before :meth:`_set_driver_env` ran, ``ray.init("127.0.0.1:port")``
        would rewrite the address to the machine's external IP, where the private
        head does not listen, and hang. Restored by :meth:`shutdown`.
        """
        try:
            from ray._private import ray_constants
        except ImportError:  # pragma: no cover - other Ray layouts
            return
        if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
            self._saved_enable_cluster = True
            ray_constants.ENABLE_RAY_CLUSTER = False

    def _unpin_loopback_node_ip(self) -> None:
        """Undo :meth:`_pin_loopback_node_ip`."""
        if self._saved_enable_cluster:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = True
            self._saved_enable_cluster = False

    # -- task helpers -----------------------------------------------------------------

    def _maybe_put(self, value: Any, cache: dict[int, Any]) -> Any:
        """Return an object-store reference for a large pandas object, else ``value``."""
        pd = sys.modules.get("pandas")
        if pd is None or not isinstance(value, pd.DataFrame | pd.Series):
            return value
        key = id(value)
        if key not in cache:
            if int(value.memory_usage(index=True, deep=False).sum()) <= _LARGE_ARG_BYTES:
                return value
            import ray

            cache[key] = (ray.put(value), value)  # keep value alive: ids stay unique
        return cache[key][0]

    def _wait_one(
        self, pending: list, deadline: float | None, timeout_s: float | None, names: dict[Any, str]
    ) -> tuple[list, list]:
        """Wait for at least one of ``pending``; raise SleeveError on timeout or shutdown."""
        import ray

        while True:
            if _interrupt_requested:
                self._cancel(pending)
                raise SleeveError(
                    f"{_label(names[r] for r in pending)} interrupted (SIGINT): its Ray task "
                    "was cancelled"
                )
            if self._closing.is_set() or not _main_thread_alive():
                self._cancel(pending)
                raise SleeveError(
                    f"{_label(names[r] for r in pending)} interrupted: the Ray "
                    "backend is shutting down"
                )
            slice_s = _WAIT_SLICE_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._cancel(pending)
                    raise SleeveError(
                        f"{_label(names[r] for r in pending)} timed out after {timeout_s:g} s "
                        "and was cancelled"
                    )
                slice_s = min(slice_s, remaining)
            ready, rest = ray.wait(pending, num_returns=1, timeout=slice_s, fetch_local=False)
            if ready:
                return ready, rest

    @staticmethod
    def _cancel(refs: list) -> None:
        """Cancel tasks, killing their workers; errors of a dying cluster are ignored."""
        import ray

        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # pragma: no cover - cluster already gone
                logger.debug("cancel failed: %s", exc)

    @staticmethod
    def _sleeve_error(name: str, err: Exception, max_retries: int) -> SleeveError:
        """Translate a Ray error into a one-line SleeveError naming the sleeve."""
        from ray import exceptions as rex

        if isinstance(err, rex.RayTaskError):
            cause = getattr(err, "cause", None)
            if cause is None:
                return SleeveError(f"sleeve {_name(name)} failed: {_one_line(err)}")
            return SleeveError(
                f"sleeve {_name(name)} failed: {type(cause).__name__}: {_one_line(cause)}"
            )
        if isinstance(err, rex.TaskCancelledError):
            return SleeveError(f"sleeve {_name(name)} was cancelled")
        died = (
            rex.WorkerCrashedError,
            rex.OutOfMemoryError,
            rex.NodeDiedError,
            rex.LocalRayletDiedError,
        )
        if isinstance(err, died):
            retries = f"{max_retries} retr{'y' if max_retries == 1 else 'ies'}"
            return SleeveError(
                f"sleeve {_name(name)} failed: worker died ({type(err).__name__}) after {retries}"
            )
        if isinstance(err, rex.RayError):
            return SleeveError(
                f"sleeve {_name(name)} failed: worker died or its result was lost "
                f"({type(err).__name__}: {_one_line(err)[:300]})"
            )
        return SleeveError(f"sleeve {_name(name)} failed: {type(err).__name__}: {_one_line(err)}")

    # -- teardown and environment -----------------------------------------------------

    def _set_driver_env(self, **values: str | None) -> None:
        """Set (or unset, for None) variables in this process, remembering the old values."""
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _restore_env(self) -> None:
        """Undo :meth:`_set_driver_env` and let Ray re-read its auth settings."""
        self._unpin_loopback_node_ip()
        if not self._saved_env:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if "ray" in sys.modules:
            _refresh_ray_auth_state()

    def _stop_private_head(self) -> None:
        """Stop the head's whole session, then the reaper; delete the temp dir and token."""
        head, reaper, temp_dir = self._head, self._reaper, self._temp_dir
        self._head = self._reaper = self._temp_dir = None
        if head is not None:
            _kill_session(head.pid, _HEAD_TERM_GRACE_S, leader=head)
        if reaper is not None:
            if reaper.poll() is None:
                reaper.terminate()
            try:
                reaper.wait(timeout=_REAPER_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _drop_sigterm_note(record: logging.LogRecord) -> bool:
    """Filter out Ray's warning that ``ray.init`` in a job thread cannot set a SIGTERM handler.

    Expected here: Snakemake owns the signals, and the job threads connect.
    """
    return "SIGTERM handler is not set" not in record.getMessage()


def _main_thread_alive() -> bool:
    """Return False once the interpreter is exiting (the main thread has stopped)."""
    return threading.main_thread().is_alive()


# ----------------------------------------------------------------------------- singletons

_registry: dict[tuple[str | None, int | None], RayBackend] = {}
_registry_lock = threading.Lock()


def backend_from_config(ray: bool, address: str | None, num_cpus: int | None) -> RayBackend | None:
    """Return the process-wide backend for these settings, or None for sequential mode.

    Every Snakemake job thread of one workflow run calls this and gets the same
    instance, hence one cluster. Nothing starts until the first task.

    Parameters
    ----------
    ray : bool
        Whether sleeves run on Ray; False returns None.
    address : str, optional
        External cluster address (see :class:`RayBackend`); None for
        ``RAY_ADDRESS`` if set, else a private head.
    num_cpus : int, optional
        CPUs of a private head.

    Returns
    -------
    RayBackend or None

    Raises
    ------
    ConfigError
        If ``address``, ``RAY_ADDRESS`` or ``num_cpus`` is invalid.
    """
    if not ray:
        return None
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = _validate_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    key = (address, num_cpus)
    with _registry_lock:
        backend = _registry.get(key)
        if backend is None or backend._closing.is_set():
            backend = RayBackend(address=address, num_cpus=num_cpus)
            _registry[key] = backend
        return backend


def shutdown_all() -> None:
    """Shut down every backend made by :func:`backend_from_config` (idempotent).

    Meant for Snakemake's ``onsuccess``/``onerror`` hooks; started backends also
    shut down at interpreter exit.
    """
    with _registry_lock:
        backends = list(_registry.values())
        _registry.clear()
    for backend in backends:
        backend.shutdown()


def watch_interrupts() -> None:
    """Make Ctrl-C (SIGINT) stop the run's Ray tasks promptly; call at the start of a run.

    Snakemake answers Ctrl-C by waiting for its running jobs, and a job thread
    waiting for a Ray task does not see the KeyboardInterrupt: the run would
    only stop once every running sleeve finished. The handler installed here
    first flags the interrupt, which makes every waiting job cancel its task
    within half a second and fail, then hands the signal to the handler it
    replaced (by default: raise KeyboardInterrupt). The hooks then stop the
    cluster as after any failure.

    Idempotent; resets the flag of an earlier run. Only the main thread may set
    signal handlers, so elsewhere (and where SIGINT is ignored) only the flag
    is reset.
    """
    global _interrupt_requested
    _interrupt_requested = False
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or getattr(previous, "_stops_ray_tasks", False):
        return

    def _on_sigint(signum: int, frame: Any) -> None:
        global _interrupt_requested
        _interrupt_requested = True
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL or a handler not set from Python
            raise KeyboardInterrupt

    _on_sigint._stops_ray_tasks = True
    signal.signal(signal.SIGINT, _on_sigint)


def interrupted() -> bool:
    """Return whether SIGINT arrived since the last :func:`watch_interrupts` call."""
    return _interrupt_requested


# ----------------------------------------------------------------------------- reaper CLI


def _main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tradingview_scraper.orchestration.compute --reap``."""
    parser = argparse.ArgumentParser(
        prog="python -m tradingview_scraper.orchestration.compute",
        description="Watchdog: stop a private Ray head once its driver process is gone.",
    )
    parser.add_argument(
        "--reap", nargs=2, type=int, metavar=("DRIVER_PID", "HEAD_PGID"), required=True
    )
    parser.add_argument("--driver-started", type=float, default=None)
    parser.add_argument("--remove", default=None, help="directory to delete afterwards")
    args = parser.parse_args(argv)
    _reap(args.reap[0], args.driver_started, args.reap[1], args.remove)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
