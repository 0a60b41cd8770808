"""The one object that owns a run's Ray cluster: a private loopback cluster it starts, or one it joins."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PipelineError, one_line
from . import _tasks
from ._process import (
    LOOPBACK,
    PACKAGE_DIR,
    no_sigterm_note,
    private_temp_dir,
    put_env,
    validate_address,
    write_token,
)

__all__ = ["Cluster"]

logger = logging.getLogger(__name__)


class Cluster:
    """The Ray cluster of one run: started (private) or joined (named) once, shared by its jobs.

    Nothing starts at construction. The process owning the run calls :meth:`start` for a
    private cluster: ``ray.init(address="local")``, every listener on 127.0.0.1, token auth
    with a fresh 0600 token file in a private 0700 temp dir, and Ray's own fate-sharing
    (its processes die with the starting thread, even on SIGKILL). :meth:`connect` joins a
    named cluster (what a job does); a joined cluster is never stopped.

    Parameters
    ----------
    address : str, optional
        A cluster to join, ``host:port`` or ``ray://host:port``; None for a private one.
    token_path : path-like, optional
        Token file of the cluster to join.
    num_cpus : int, optional
        CPUs of a private cluster; default and maximum: this machine's.
    mode : {"private", "external"}, optional
        What provenance records (a job on its run's private cluster says "private");
        default "external" with an address, else "private".

    Raises ConfigError for an invalid setting.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token_path: str | Path | None = None,
        num_cpus: int | None = None,
        mode: str | None = None,
    ) -> None:
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise ConfigError(f"ray_num_cpus={num_cpus!r} is invalid: give a positive integer or nothing")
        machine = os.cpu_count() or 1
        if address is None and num_cpus is not None and num_cpus > machine:
            raise ConfigError(f"num_cpus={num_cpus} (config ray_num_cpus) exceeds this machine's {machine} "
                              f"CPUs: a private Ray cluster must not oversubscribe it; give at most {machine}, "
                              "or the address of an external cluster")  # fmt: skip
        if mode not in (None, "private", "external"):
            raise ConfigError(f"ray_mode={mode!r} is invalid: give 'private' or 'external'")
        self._settings = {"address": address, "token_path": token_path, "num_cpus": num_cpus, "mode": mode}
        self.address = validate_address(address) if address is not None else None
        self.token_path = Path(token_path) if token_path and address is not None else None
        self.mode = mode or ("external" if address is not None else "private")
        self.num_cpus = None if address is not None else (num_cpus or machine)
        self.start_s: float | None = None  #: seconds ``start``/``connect`` took
        self.stop_s: float | None = None  #: seconds ``shutdown`` took (stopping, or leaving, the cluster)
        self._temp_dir: Path | None = None
        self._started = False  # this object started the private cluster
        self._initialized = False  # this object called ray.init (so it calls ray.shutdown)
        self._up = False
        self._closing = threading.Event()
        self._on_demand, self._keeper, self._head_error = False, None, None  # start_on_demand
        self._head_ready, self._released = threading.Event(), threading.Event()
        self._lock = threading.RLock()
        self._remote = None
        self._saved_env: dict[str, str | None] = {}
        self._owner_pid = os.getpid()

    def __repr__(self) -> str:
        return f"Cluster(mode={self.mode!r}, address={self.address!r}, up={self._up})"

    @property
    def is_up(self) -> bool:
        """Whether this process is connected to the cluster through this object."""
        return self._up and not self._closing.is_set()

    def renewed(self) -> Cluster:
        """This object, or after :meth:`shutdown` a new, unstarted one of the same settings (another run)."""
        return Cluster(**self._settings) if self._closing.is_set() else self

    def start(self) -> Cluster:
        """Start the private cluster (a named one is joined instead) and connect; idempotent.

        From the main thread: Ray ties the processes it starts to the starting thread
        (SIGKILLed when it ends). The process keeps its own SIGTERM handler, not Ray's.
        Raises PipelineError (one line) if the cluster does not come up.
        """
        if self.address is not None and not self._started:
            return self.connect()
        self._check_usable()
        if not self._up and threading.current_thread() is not threading.main_thread():
            raise PipelineError("start the run's private Ray cluster from the main thread: Ray ties "
                                "its processes to the thread that starts them")  # fmt: skip
        return self._start_private()

    def start_on_demand(self) -> Cluster:
        """Let the first :meth:`connect` (so the first :meth:`map`), from any thread, start the private cluster.

        For jobs that are threads of this process: the cluster starts once, when a task needs
        it (others wait for it), or never. A thread of its own starts and keeps the head until
        :meth:`shutdown`, as Ray ties its processes to the starting thread. Idempotent.
        """
        with self._lock:
            self._check_usable()
            if self.address is None:
                self._on_demand = True
        return self

    def _start_when_needed(self) -> Cluster:
        with self._lock:
            self._check_usable()
            if self._up and self._keeper is None:  # started by start() meanwhile
                return self
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="tvs-ray-head", daemon=True)
                self._keeper.start()
        self._head_ready.wait()
        if self._head_error is not None:
            raise self._head_error from None
        self._check_usable()
        return self

    def _keep(self) -> None:  # the keeper thread: start the head, then live (and it with) until the teardown
        try:
            self._start_private()
        except BaseException as exc:  # handed to the waiting tasks' threads, which raise it
            self._head_error = exc if isinstance(exc, PipelineError) else PipelineError(one_line(exc))
        finally:
            self._head_ready.set()
        if self._head_error is None:
            self._released.wait()

    def _start_private(self) -> Cluster:
        """Start the private cluster and connect (from the main thread, or the keeper thread)."""
        with self._lock:
            self._check_usable()
            if self._up:
                return self
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                raise PipelineError("Ray is already connected in this process: one process owns one "
                                    "cluster; shut the other connection down first")  # fmt: skip
            with self._coming_up():
                self._temp_dir = private_temp_dir()
                token_path = write_token(self._temp_dir)
                # Read by Ray at import and by every process it starts: loopback listeners only.
                self._set_env(
                    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                    RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(token_path),
                    RAY_AUTH_TOKEN=None,
                    RAY_ADDRESS=None,
                    RAY_USAGE_STATS_ENABLED="0",
                )
                context = self._init(
                    address="local",
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    _node_ip_address=LOOPBACK,
                    _temp_dir=str(self._temp_dir / "r"),
                )
                self._started = True
                self.address = context.address_info["gcs_address"]
                self.token_path = token_path
                if not self.address.startswith(f"{LOOPBACK}:"):
                    raise PipelineError(f"the private Ray cluster bound {self.address}, not 127.0.0.1: set "
                                        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before anything imports ray")  # fmt: skip
        return self

    def connect(self) -> Cluster:
        """Join the cluster at :attr:`address` (what a job does); idempotent.

        If this process is already connected to it (the run owner's connection, jobs being
        its threads), that connection is used and left to its owner. An external cluster's
        workers get this package through ``runtime_env`` (``py_modules``): they need Ray
        and the dependencies, not the project. Raises PipelineError if there is no address
        yet, the cluster is unreachable or refuses the token, or this process is connected
        to another cluster.
        """
        if self._on_demand:
            return self._start_when_needed()
        with self._lock:
            self._check_usable()
            if self._up:
                return self
            if self.address is None:
                raise PipelineError("the run's private Ray cluster is not started: the process that owns "
                                    "the run starts it (Cluster.start) before sleeve jobs run")  # fmt: skip
            ray_module = sys.modules.get("ray")
            if ray_module is not None and ray_module.is_initialized():
                current = ray_module.get_runtime_context().gcs_address
                if current != self.address.removeprefix("ray://"):
                    raise PipelineError(f"this process is connected to the Ray cluster at {current}, "
                                        f"not {self.address}: one process joins one cluster")  # fmt: skip
                self._up = True
                return self
            host, _, port = self.address.removeprefix("ray://").rpartition(":")
            with self._coming_up():
                if ray_module is None:  # read once, at import: keep loopback, or a real address
                    self._set_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0" if host in {LOOPBACK, "localhost"} else "1")
                if self.token_path is not None:
                    self._set_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path), RAY_AUTH_TOKEN=None)
                try:
                    # ray.init retries an unreachable address for minutes: fail fast instead.
                    socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
                except OSError as exc:
                    raise PipelineError(
                        f"cannot reach the Ray cluster at {self.address!r}: {exc}; check the address "
                        "(config ray_address) and that the cluster is running"
                    ) from exc
                options: dict[str, Any] = {"address": self.address}
                if self.mode == "external":
                    options["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
                self._init(**options)
                if not self.address.startswith("ray://"):  # as Ray names it (a host name resolved)
                    self.address = sys.modules["ray"].get_runtime_context().gcs_address
            return self

    @contextlib.contextmanager
    def _coming_up(self) -> Iterator[None]:
        """Around a start or a join: undone if it fails, else up (Ray has read the environment: restored)."""
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self._teardown()
            raise
        self._restore_env()  # nothing of the cluster leaks to child processes
        self._up = True
        self.start_s = time.monotonic() - started
        atexit.register(self.shutdown)
        verb = "started" if self._started else "joined"
        extra = {"ray_start_s": self.start_s, "ray_mode": self.mode, "ray_owner": self._started}
        logger.info("%s the %s Ray cluster at %s in %.2f s", verb, self.mode, self.address, self.start_s, extra=extra)

    def shutdown(self) -> None:
        """Disconnect, and stop the cluster if this object started it; idempotent.

        Tasks waited for in other threads fail with SleeveError (MetaError). ``ray.shutdown()``
        stops every process of a private cluster; its temp dir and token go. A joined one runs on.
        """
        self._closing.set()
        if os.getpid() != self._owner_pid:
            return  # a forked child: the cluster belongs to the parent
        with self._lock:
            atexit.unregister(self.shutdown)
            stopping, began = self._initialized, time.monotonic()
            self._teardown()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=10)  # it ends once the teardown released it
        if stopping:
            self.stop_s = time.monotonic() - began
            verb = "stopped" if self._started else "left"
            logger.info("%s the %s Ray cluster in %.2f s", verb, self.mode, self.stop_s,
                        extra={"ray_stop_s": self.stop_s, "ray_owner": self._started})  # fmt: skip

    def cpus(self) -> int:
        """CPUs the cluster offers to tasks: ``ray.cluster_resources()``, connecting if needed.

        A private cluster not started yet answers the CPUs it will have, without starting.
        """
        if self.address is None:
            return int(self.num_cpus)
        self.connect()
        import ray

        return int(ray.cluster_resources().get("CPU", 0))

    def job_config(self) -> dict[str, str]:
        """The settings a job needs to join this cluster: Snakemake config keys, as strings."""
        if self.address is None:
            raise PipelineError("the run's private Ray cluster is not started: it has no address yet")
        out = {"ray_address": self.address, "ray_mode": self.mode}
        if self.token_path is not None:
            out["ray_token_path"] = str(self.token_path)
        return out

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[tuple],
        *,
        num_cpus: float = 1,
        max_retries: int = 2,
        timeout_s: float | None = None,
        kind: str = "sleeve",
    ) -> dict:
        """Run ``fn`` once per ``(name, args, kwargs)`` item as Ray tasks, all submitted first.

        A name is a sleeve id or ``(sleeve id, part)``; with ``kind="meta"`` the tasks are a
        meta node's, named ``(node label, part)``, and fail with MetaError. Each task reserves
        ``num_cpus``; a task whose worker died is retried ``max_retries`` times (exceptions of
        ``fn`` never are); ``timeout_s`` bounds all tasks together. A pandas argument is put in the object
        store once per map: a sleeve's prices travel from here to wherever its tasks run.

        Returns ``{name: (result, provenance)}`` in the order of ``items``; provenance holds
        the task's ``node_id``, ``node_ip``, ``worker_pid``, ``duration_s`` and the cluster's
        ``address`` and ``mode``. Raises ConfigError for malformed items or an unknown kind;
        SleeveError (MetaError) (one line, naming the task) at the first failure, a timeout,
        an interrupt or a shutdown (the other tasks are cancelled); PipelineError if the
        cluster cannot be used.
        """
        items = list(items)
        names = _tasks.check_map(items, kind, num_cpus, self.num_cpus)
        if not items:
            return {}
        self.connect()
        if self._remote is None:
            import ray

            self._remote = ray.remote(_tasks.traced_call)
        return _tasks.run_tasks(self._remote, fn, items, names, num_cpus=num_cpus, max_retries=max_retries, timeout_s=timeout_s,
                                closing=self._closing.is_set, kind=kind, where={"address": self.address, "mode": self.mode})  # fmt: skip

    def _check_usable(self) -> None:
        if self._closing.is_set():
            raise PipelineError("the run's Ray cluster was shut down; make a new Cluster to run more tasks")
        if os.getpid() != self._owner_pid:
            raise PipelineError("a Cluster cannot be used from a forked child process")

    def _init(self, **options: Any):
        """``ray.init(**options)`` quietly, keeping this process's SIGTERM handler."""
        import ray

        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        # Off the main thread Ray notes that it sets no SIGTERM handler: the process keeps its own.
        handlers = [] if main else logging.getLogger("ray").handlers
        for handler in handlers:
            handler.addFilter(no_sigterm_note)
        try:
            context = ray.init(logging_level=logging.WARNING, **options)
            self._initialized = True
            return context
        except Exception as exc:
            hint = ""
            if self.address is not None and self.mode == "external":
                hint = "; a token-auth cluster needs its token file (config ray_token_path)"
            where = self.address or "a private loopback cluster"
            raise PipelineError(
                f"cannot start or join the Ray cluster ({where}): {type(exc).__name__}: "
                f"{one_line(str(exc))[:400]}{hint}"
            ) from exc
        finally:
            for handler in handlers:
                handler.removeFilter(no_sigterm_note)
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _teardown(self) -> None:
        self._up = False
        if self._initialized:
            import ray

            try:
                ray.shutdown()
            except Exception as exc:  # best effort: the cluster may already be gone
                logger.warning("ray.shutdown() failed: %s", exc)
            self._initialized = False
        self._released.set()  # the keeper thread, if any, may end: the head's processes are gone
        self._restore_env()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _set_env(self, **values: str | None) -> None:
        for key in values:
            self._saved_env.setdefault(key, os.environ.get(key))
        put_env(values)

    def _restore_env(self) -> None:
        put_env(self._saved_env)
        self._saved_env.clear()
