"""The one object that owns a run's Ray cluster: a private loopback cluster it starts, or one it joins."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PipelineError, one_line
from . import _tasks

__all__ = ["Cluster"]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")
#: The package directory: what ``runtime_env`` ships to the workers of an external cluster.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Private clusters' temp dirs, ``/tmp/tvr-<driver pid>-XXXXXXXX``: short, as Ray's unix
#: sockets live 75 characters below.
_TEMP_ROOT, _TEMP_PREFIX = Path("/tmp"), "tvr-"

# Ray loads the auth token once per process and keeps it: every private cluster this
# process starts shares one secret, each written to that run's own 0600 file.
_process_token: str | None = None


class Cluster:
    """The Ray cluster of one run: started (private) or joined (named) once, shared by its jobs.

    Nothing starts at construction. :meth:`start` brings the cluster up: a private one is
    ``ray.init(address="local")`` with every listener on 127.0.0.1 and token auth (a fresh
    0600 token file in a private 0700 temp dir), stopped by :meth:`shutdown` and, through
    Ray's fate-sharing, when this process dies (even by SIGKILL); a named one is joined and
    never stopped. :meth:`connect` is what a job does: join the run's cluster, or start a
    private one the owner allowed to start on demand (:meth:`start_on_demand`).

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
        self._private = address is None  # this object starts the cluster (else joins it)
        self.address = None if self._private else _checked_address(address)
        self.token_path = None if self._private or not token_path else Path(token_path)
        self.mode = mode or ("private" if self._private else "external")
        self.num_cpus = (num_cpus or machine) if self._private else None
        self.start_s: float | None = None  #: seconds ``start``/``connect`` took
        self.stop_s: float | None = None  #: seconds ``shutdown`` took (stopping, or leaving, the cluster)
        self._on_demand = False  # connect() may start the private cluster
        self._up = False
        self._closing = threading.Event()
        self._lock = threading.Lock()  # one start at a time; the other callers wait for it
        self._keeper: threading.Thread | None = None  # holds this object's ray.init until shutdown
        self._release = threading.Event()
        self._temp_dir: Path | None = None
        self._remote = None
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
        """Start the private cluster, or join the named one, from any thread; idempotent.

        Raises PipelineError (one line) if it does not come up, or this process is connected to another.
        """
        with self._lock:
            self._check_usable()
            if not self._up:
                self._bring_up()
        return self

    def start_on_demand(self) -> Cluster:
        """Let the first :meth:`connect` (so the first :meth:`map`), from any thread, start the private cluster.

        For jobs that are threads of this process: the cluster starts once, when a task needs
        it (the others wait for it), or never. Idempotent; a named cluster is joined as usual.
        """
        self._check_usable()
        self._on_demand = self._private
        return self

    def connect(self) -> Cluster:
        """Join the cluster at :attr:`address` (what a job does); idempotent.

        If this process is already connected to it (the run owner's connection, jobs being
        its threads), that connection is used and left to its owner. An external cluster's
        workers get this package through ``runtime_env`` (``py_modules``): they need Ray
        and the dependencies, not the project. Raises PipelineError if the private cluster is
        not started (nor to be started on demand), the cluster is unreachable or refuses the
        token, or this process is connected to another.
        """
        self._check_usable()
        if self._private and not (self._up or self._on_demand):
            raise PipelineError("the run's private Ray cluster is not started: the process that owns "
                                "the run starts it (Cluster.start) before sleeve jobs run")  # fmt: skip
        return self.start()

    def _bring_up(self) -> None:
        """Start or join (under the lock): one path for both, undone if it fails."""
        ray_module = sys.modules.get("ray")
        if ray_module is not None and ray_module.is_initialized():
            current = ray_module.get_runtime_context().gcs_address
            if self._private:
                raise PipelineError("Ray is already connected in this process: one process owns one "
                                    "cluster; shut the other connection down first")  # fmt: skip
            if current != self.address.removeprefix("ray://"):
                raise PipelineError(f"this process is connected to the Ray cluster at {current}, "
                                    f"not {self.address}: one process joins one cluster")  # fmt: skip
            self._up = True  # the owner's connection: left to the owner
            return
        began = time.monotonic()
        try:
            env, options = self._private_settings() if self._private else self._join_settings()
            context = self._init(env, options)
            self._up = True
            if self._private:
                self.address = context.address_info["gcs_address"]
                if not self.address.startswith(f"{LOOPBACK}:"):
                    raise PipelineError(f"the private Ray cluster bound {self.address}, not 127.0.0.1: set "
                                        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before anything imports ray")  # fmt: skip
            elif not self.address.startswith("ray://"):  # as Ray names it (a host name resolved)
                self.address = sys.modules["ray"].get_runtime_context().gcs_address
        except BaseException:
            self._teardown()
            raise
        self.start_s = time.monotonic() - began
        atexit.register(self.shutdown)
        verb = "started" if self._private else "joined"
        extra = {"ray_start_s": self.start_s, "ray_mode": self.mode, "ray_owner": self._private}
        logger.info("%s the %s Ray cluster at %s in %.2f s", verb, self.mode, self.address, self.start_s, extra=extra)

    def _private_settings(self) -> tuple[dict, dict]:
        """The environment and ``ray.init`` options of a private cluster; makes its temp dir and token."""
        self.token_path = _private_token()
        self._temp_dir = self.token_path.parent
        # Read by Ray at import and by every process it starts: loopback listeners, token auth.
        env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None,
               "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_ADDRESS": None, "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
        options = {"address": "local", "num_cpus": self.num_cpus, "include_dashboard": False,
                   "_node_ip_address": LOOPBACK, "_temp_dir": str(self._temp_dir / "r")}  # fmt: skip
        return env, options

    def _join_settings(self) -> tuple[dict, dict]:
        """The environment and ``ray.init`` options to join :attr:`address`, once it answers."""
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        try:
            # ray.init retries an unreachable address for minutes: fail fast instead.
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise PipelineError(f"cannot reach the Ray cluster at {self.address!r}: {exc}; check the address "
                                "(config ray_address) and that the cluster is running") from exc  # fmt: skip
        env: dict[str, str | None] = {}
        if "ray" not in sys.modules:  # read once, at import: keep loopback, or a real address
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0" if host in {LOOPBACK, "localhost"} else "1"
        if self.token_path is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path), RAY_AUTH_TOKEN=None)
        options: dict[str, Any] = {"address": self.address}
        if self.mode == "external":
            options["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
        return env, options

    def _init(self, env: dict, options: dict):
        """``ray.init(**options)`` on a keeper thread that lives until :meth:`shutdown`.

        Ray ties the processes it starts to the thread that starts them (they die when it
        ends), and a job's thread ends before the run does. Off the main thread Ray sets no
        SIGTERM handler either: the process keeps its own. ``env`` holds only while Ray reads
        it (at import, and as the environment of the processes it starts): nothing of the
        cluster leaks to the processes this one starts later.
        """
        outcome: queue.SimpleQueue = queue.SimpleQueue()
        self._release = release = threading.Event()

        def keep() -> None:
            try:
                with _environ(env):
                    import ray

                    for handler in logging.getLogger("ray").handlers:  # once each: its note is always true here
                        handler.addFilter(_no_sigterm_note)
                    outcome.put(ray.init(logging_level=logging.WARNING, **options))
            except BaseException as exc:  # raised in the thread that asked for the cluster
                outcome.put(exc)
                return
            release.wait()

        self._keeper = threading.Thread(target=keep, name="tvs-ray-head", daemon=True)
        self._keeper.start()
        context = outcome.get()
        if isinstance(context, BaseException):
            self._keeper = None
            hint = "; a token-auth cluster needs its token file (config ray_token_path)" if self.mode == "external" else ""
            raise PipelineError(
                f"cannot start or join the Ray cluster ({self.address or 'a private loopback cluster'}): "
                f"{type(context).__name__}: {one_line(str(context))[:400]}{hint}"
            ) from context
        return context

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
            keeper, began = self._keeper, time.monotonic()
            self._teardown()
        if keeper is not None:
            keeper.join(timeout=10)  # it ends once the teardown released it
            self.stop_s = time.monotonic() - began
            verb = "stopped" if self._private else "left"
            logger.info("%s the %s Ray cluster in %.2f s", verb, self.mode, self.stop_s,
                        extra={"ray_stop_s": self.stop_s, "ray_owner": self._private})  # fmt: skip

    def _teardown(self) -> None:
        self._up = False
        if self._keeper is not None:
            import ray

            try:
                ray.shutdown()
            except Exception as exc:  # best effort: the cluster may already be gone
                logger.warning("ray.shutdown() failed: %s", exc)
            self._keeper = None
        self._release.set()  # the keeper thread ends: the processes tied to it are gone
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _check_usable(self) -> None:
        if self._closing.is_set():
            raise PipelineError("the run's Ray cluster was shut down; make a new Cluster to run more tasks")
        if os.getpid() != self._owner_pid:
            raise PipelineError("a Cluster cannot be used from a forked child process")

    def cpus(self) -> int:
        """CPUs the cluster offers to tasks: a private cluster's own (started or not), else ``ray.cluster_resources()``."""
        if self._private:
            return self.num_cpus
        self.connect()
        import ray

        return int(ray.cluster_resources().get("CPU", 0))

    def job_config(self) -> dict[str, str]:
        """The settings a job in another process needs to join this cluster: Snakemake config keys, as strings."""
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
        ``fn`` never are); ``timeout_s`` bounds all tasks together. A pandas argument is put in
        the object store once per map: a sleeve's prices travel from here to wherever its tasks run.

        Returns ``{name: (result, provenance)}`` in the order of ``items``; provenance holds
        the task's ``node_id``, ``node_ip``, ``worker_pid``, ``duration_s``, ``warnings`` and
        the cluster's ``address`` and ``mode``. Raises ConfigError for malformed items or an
        unknown kind; SleeveError (MetaError) (one line, naming the task) at the first failure,
        a timeout, an interrupt or a shutdown (the other tasks are cancelled); PipelineError
        if the cluster cannot be used.
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


def _checked_address(address: str) -> str:
    """``address`` if it names a Ray cluster explicitly (``host:port`` or ``ray://host:port``), else ConfigError."""
    value = str(address).strip()
    if value.lower() in {"", "auto", "local"} or not _HOST_PORT.match(value):
        raise ConfigError(f"ray_address={address!r} is not an explicit Ray address: give 'host:port' (the "
                          "GCS port, 6379 by default) or 'ray://host:port' ('auto' and 'local' are not "
                          "allowed), or leave it unset for a private loopback cluster")  # fmt: skip
    return value


def _private_token() -> Path:
    """The process's auth token, in a 0600 file of a new 0700 temp dir (after sweeping those of killed drivers)."""
    global _process_token
    for path in _TEMP_ROOT.glob(f"{_TEMP_PREFIX}*-*"):
        pid = path.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and path.stat().st_uid == os.getuid() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(path, ignore_errors=True)
    _process_token = _process_token or secrets.token_hex(32)
    token_path = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=_TEMP_ROOT)) / "token"
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_process_token)
    return token_path


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    """Within the block, this process's environment has ``values`` (None: unset); restored after."""
    saved = {key: os.environ.get(key) for key in values}
    _put_env(values)
    try:
        yield
    finally:
        _put_env(saved)


def _put_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _no_sigterm_note(record: logging.LogRecord) -> bool:
    """Drop Ray's note that it set no SIGTERM handler (``ray.init`` off the main thread)."""
    return not str(record.msg).startswith("SIGTERM handler is not set")
