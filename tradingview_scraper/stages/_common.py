"""What every step runs in: its log file, its ledger entry, one-line errors, the declared-I/O watch, warnings, imports."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import audit
from ..errors import PipelineError, StageError, one_line
from ..layout import watch_io
from ..run import RunContext

logger = logging.getLogger("tradingview_scraper")


#: A rule's named files as a stage receives them: name -> path, or name -> list of paths. Any
#: object with ``items()`` of that shape will do: a dict, or the ``input`` / ``output`` a
#: rule's ``run:`` block has (Snakemake's named lists, whose ``items()`` are their names).
Files = Mapping[str, "str | os.PathLike | Iterable[str | os.PathLike]"]


def _named(files: Files) -> dict[str, str | list[str]]:
    """Plain strings of a rule's named files (a stage keeps no object of the workflow engine)."""
    return {
        name: str(value) if isinstance(value, str | os.PathLike) else [str(v) for v in value]
        for name, value in files.items()
    }


def child_input(name: str, child: str) -> str:
    """The name of input ``name`` of child ``child`` (a sleeve id or plan path) in a rule's named inputs."""
    return f"{name}:{child}"


@dataclass
class StageIO:
    """What one stage received (``inputs``, ``outputs``, ``log``) and what it read and wrote through :mod:`layout`."""

    stage: str
    node: str
    log: str | None
    inputs: list[str]
    outputs: list[str]
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)


_stage_watchers: list[Callable[[StageIO], None]] = []


@contextlib.contextmanager
def watch(callback: Callable[[StageIO], None]) -> Iterator[None]:
    """While the block runs, ``callback`` gets a :class:`StageIO` of every stage that ends, in this process.

    The seam that proves a stage reads only the files its rule gave it and writes only the
    files its rule declares (``tests/test_wiring.py``).
    """
    _stage_watchers.append(callback)
    try:
        yield
    finally:
        _stage_watchers.remove(callback)


@contextlib.contextmanager
def _watched(io: StageIO) -> Iterator[None]:
    """Collect this thread's artifact I/O for the stage's watchers (a job thread runs one stage at a time)."""
    if not _stage_watchers:
        yield
        return
    me = threading.get_ident()

    def seen(op: str, path: str) -> None:
        if threading.get_ident() == me:
            (io.reads if op == "read" else io.writes).append(path)

    try:
        with watch_io(seen):
            yield
    finally:
        for callback in list(_stage_watchers):
            callback(io)


@contextlib.contextmanager
def _stage(
    ctx: RunContext, stage: str, node_path: str, profile: str | None, logfile: str | None, params: dict, inputs, outputs
) -> Iterator[audit.stage_audit]:
    """Log this thread's records to ``logfile`` and record the stage, its inputs and outputs in the ledger.

    Yields the ledger record: a stage may extend its ``params`` with its outcome and its
    ``inputs`` with what it read undeclared; once the block ends, ``.entry`` is what the ledger
    holds. Any error but the project's own becomes a StageError naming the stage, node and
    risk ``profile``.
    """
    handler = None
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logfile, mode="w")
        me = threading.get_ident()
        handler.addFilter(lambda record: record.thread == me)  # this job's thread only
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    what = f"{stage} {node_path}" + (f" ({profile})" if profile else "")
    io = StageIO(stage, node_path, logfile and str(logfile), [str(p) for p in inputs], [str(p) for p in outputs])
    try:
        ensure_genesis(ctx)
        with _watched(io), audit.stage_audit(ctx.run_dir, stage, node_path, params, inputs, outputs) as record:
            try:
                audit.check_inputs(ctx.run_dir, record.inputs)  # never consume an artifact changed since written
                logger.info("%s %s: start", stage, node_path)
                yield record
            except PipelineError:
                raise
            except Exception as exc:  # a library's error: name the stage and node it broke
                raise StageError(f"{what}: {one_line(exc)}") from exc
        logger.info("%s %s: done in %.2f s", stage, node_path, record.entry["duration_s"])
    except Exception as exc:
        logger.error("%s: %s", what, exc)  # for the stage's log file; the ledger and the exception carry it
        raise
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def ensure_genesis(ctx: RunContext) -> None:
    """Start the run's audit ledger (idempotent).

    Its genesis names the earlier runs this run reads (pins, the previous run): a run still in
    progress has recorded no input of theirs yet, and pruning keeps what it names there.
    """
    pins = sorted({n.pin for n in ctx.plan.atomic_nodes() if n.pin})
    reads = {"pins": pins} if pins else {}
    if ctx.previous_run:
        reads["previous_run"] = ctx.previous_run
    audit.genesis(
        ctx.run_dir,
        run_id=ctx.run_id,
        meta_profile=ctx.plan.profile,
        manifest_path=ctx.plan.manifest_path,
        manifest_sha256=ctx.plan.manifest_sha256,
        extra=reads,
    )


def console_warning(message: str) -> None:
    """A warning the person running the pipeline must see: on stderr, whatever the entry point.

    Stages run as threads of the driver (the runner's or plain ``snakemake``'s), so stderr
    is the console's; the stage log keeps the line too.
    """
    logger.warning("%s", message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


#: Heavy modules the driver's steps import: skfolio first (sleeves, meta optimize), then matplotlib (report).
_PREWARM_MODULES = (
    "skfolio.datasets",
    "skfolio.model_selection",
    "skfolio.optimization",
    "skfolio.measures",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "matplotlib.dates",
    "tradingview_scraper.meta",
    "tradingview_scraper.report",
)

_prewarm_lock = threading.Lock()
_prewarm_thread: threading.Thread | None = None


def prewarm() -> threading.Thread:
    """Import the steps' heavy modules in one background thread, once per process; returns the thread.

    While the sleeves compute on Ray the driver only waits; importing skfolio and matplotlib
    then takes them off the critical path, where the first meta optimize and
    the report would otherwise import them after the last sleeve (see docs/performance.md).
    """
    global _prewarm_thread
    with _prewarm_lock:
        if _prewarm_thread is None:
            _prewarm_thread = threading.Thread(target=_import_modules, name="tvs-prewarm")
            _prewarm_thread.start()
        return _prewarm_thread


def _import_modules() -> None:
    for name in _PREWARM_MODULES:
        with contextlib.suppress(Exception):  # the step that needs the module reports the error
            importlib.import_module(name)


def _import_numerics() -> None:
    """Before a step fits or draws in this process: wait for the heavy modules, imported by
    :func:`prewarm`'s one thread (started now if no step has yet).

    Job threads that import scikit-learn for the first time at once can see a partially
    initialized module (``ImportError: cannot import name 'clone' from partially initialized
    module 'sklearn.base'``), and two threads importing one package at once can deadlock.
    """
    prewarm().join()
