"""Workflow stages: the thin functions the Snakefile's rules call, one per rule.

Each stage reads its inputs through :mod:`layout`, calls the pure functions of
:mod:`sleeve` / :mod:`meta` / :mod:`report`, writes its outputs atomically and records
itself in the run's audit ledger.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from . import audit, runlock
from .engines import HIERARCHICAL
from .errors import (
    ConfigError,
    DataError,
    PipelineError,
    RunInProgressError,
    SleeveError,
    StageError,
    one_line,
)
from .layout import (
    Node,
    atomic_write_bytes,
    child_path,
    read_json,
    read_parquet,
    refuse_symlink,
    run_node,
    write_json,
    write_parquet,
)
from .manifest import ROOT, NodeSpec, Plan
from .run import RunContext

log = logging.getLogger("tradingview_scraper")


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


_IMPORT_GUARD = threading.Lock()
#: Stages that fit skfolio models in this process (a sleeve too, when it runs without Ray).
_NUMERIC_STAGES = frozenset({"meta_optimize", "report", "risk"})


def _import_numerics() -> None:
    """Import skfolio (and through it sklearn, scipy) once, one thread at a time.

    Job threads that import them for the first time concurrently can see a partially
    initialized module (``ImportError: cannot import name 'clone' from partially
    initialized module 'sklearn.base'``).
    """
    with _IMPORT_GUARD:
        import skfolio.datasets  # noqa: F401
        import skfolio.model_selection  # noqa: F401
        import skfolio.optimization  # noqa: F401


@contextlib.contextmanager
def _stage(
    ctx: RunContext, stage: str, node_path: str, logfile: str | None, params: dict, inputs, outputs
) -> Iterator[audit.stage_audit]:
    """Log this thread's records to ``logfile`` and audit the stage's inputs and outputs.

    Yields the audit record, whose ``params`` a stage may extend with its outcome.
    """
    handler = None
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logfile, mode="w")
        handler.addFilter(_ThreadFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    what = f"{stage} {node_path}" + (f" ({params['profile']})" if stage in ("meta_optimize", "flatten") else "")
    try:
        if stage in _NUMERIC_STAGES or (stage == "sleeve" and not ctx.ray):
            _import_numerics()
        ensure_genesis(ctx)
        with audit.stage_audit(ctx.run_dir, stage, node_path, params, list(inputs), list(outputs)) as record:
            try:
                audit.check_inputs(ctx.run_dir, record.inputs)  # never consume an artifact changed since written
                log.info("%s %s: start", stage, node_path)
                yield record
            except PipelineError:
                raise
            except Exception as exc:  # a library's error: name the stage and node it broke
                raise StageError(f"{what}: {one_line(exc)}") from exc
        log.info("%s %s: done in %.2f s", stage, node_path, time.perf_counter() - t0)
    except Exception as exc:
        log.error("%s: %s", what, exc)  # for the stage's log file; the ledger and the exception carry it
        raise
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def ensure_genesis(ctx: RunContext) -> None:
    """Start the run's audit ledger (idempotent)."""
    audit.genesis(
        ctx.run_dir,
        run_id=ctx.run_id,
        meta_profile=ctx.plan.profile,
        manifest_path=ctx.plan.manifest_path,
        manifest_sha256=ctx.plan.manifest_sha256,
    )


# --------------------------------------------------------------------------- the run's artifacts against its ledger

#: What a run directory may hold before its ledger exists (a run killed before any stage wrote).
_BEFORE_LEDGER = re.compile(r"^(\.run\.lock|audit\.jsonl\.lock|logs/.*|(.*/)?\.[^/]*\.tmp)$")


def discard_damaged(run_dir: Path | str, run_id: str, stream=None) -> list[str]:
    """Before the DAG is built: delete every artifact that no longer has the bytes its ledger recorded.

    What was computed with or from it goes too (see :func:`audit.discard`), so Snakemake
    reruns the job that writes it and everything downstream. Each damaged file is one line
    on ``stream`` (default stderr); the ledger records the discard. Stat first: only files whose
    size, mtime, ctime or inode differ from the record are hashed. Nothing happens while
    another live process holds the run (it is refused when its jobs start), or when the
    run directory does not exist.

    Returns
    -------
    list of str
        The lines printed.

    Raises
    ------
    ConfigError
        The run directory is a symlink.
    PipelineError
        The ledger does not verify, or the directory holds artifacts but no ledger: either
        way nothing in it can be trusted (the message says what to do).
    """
    import sys

    run_dir = refuse_symlink(Path(run_dir), "run directory")
    if not run_dir.is_dir():
        return []
    try:
        taken = runlock.acquire(run_dir, run_id)
    except RunInProgressError:
        return []
    try:
        if not Node(run_dir).file("audit").is_file():
            stray = [
                rel
                for p in sorted(run_dir.rglob("*"))
                if p.is_file() and not _BEFORE_LEDGER.match(rel := p.relative_to(run_dir).as_posix())
            ]
            if stray:
                raise PipelineError(
                    f"{run_dir} holds artifacts ({stray[0]}, ...) but no audit ledger (audit.jsonl): they cannot "
                    "be verified; remove the directory or choose another run id"
                )
            return []
        damages = audit.damaged(run_dir)
        audit.discard(run_dir, damages)
    finally:
        if taken:
            runlock.release(run_dir)
    lines = [f"{d.line(run_dir)}: discarded with what was computed from it; recomputing" for d in damages]
    for line in lines:
        print(line, file=stream or sys.stderr, flush=True)
    return lines


_runner_active = 0
_runner_guard = threading.Lock()


@contextlib.contextmanager
def runner_reports_errors() -> Iterator[None]:
    """While the runner drives the workflow in this process, it prints the run's error line itself."""
    global _runner_active
    with _runner_guard:
        _runner_active += 1
    try:
        yield
    finally:
        with _runner_guard:
            _runner_active -= 1


def report_at_exit(error: BaseException | None) -> None:
    """Print ``error`` as one line when the process exits, i.e. after Snakemake's own closing lines.

    For the plain ``snakemake`` command, whose last line is then the root cause; the runner
    (see :func:`runner_reports_errors`) prints its own.
    """
    import atexit
    import sys

    if error is not None and not _runner_active:
        atexit.register(print, f"error: {error}", file=sys.stderr, flush=True)


def first_failure(run_dir: Path | str, after: int = -1) -> PipelineError | None:
    """The first stage failure the run's ledger recorded after entry ``after``, as the pipeline error it was.

    Stages run as threads, processes or cluster jobs; Snakemake reports their exceptions only
    as text, but every stage records its failure's one line in the ledger.
    """
    from . import errors

    for entry in audit.failures(run_dir, after):
        name, _, message = str(entry.get("error") or "").partition(": ")
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, PipelineError) and message:
            return cls(message)
        return StageError(f"{entry.get('stage')} {entry.get('node')}: {entry.get('error')}")
    return None


# --------------------------------------------------------------------------- sleeves


def sleeve_outputs(ctx: RunContext, node: Node) -> list[Path]:
    """Every artifact an atomic sleeve node writes."""
    rps = ctx.plan.risk_profiles
    return [
        node.file("returns"),
        node.file("health"),
        node.file("sign_test"),
        node.file("provenance"),
        *[node.file("weights", profile=p) for p in rps],
    ]


def _sleeve_task(
    config: dict, risk_profiles: list[str], sleeve_id: str, profile: str, base_dir: str, prices=None
) -> dict:
    """What runs on a Ray worker (or in-process): the sleeve's computation as plain data."""
    from .sleeve import compute_sleeve

    result = compute_sleeve(config, risk_profiles, sleeve_id=sleeve_id, profile=profile, base_dir=base_dir, prices=prices)
    return result.to_payload()


def _driver_prices(config: dict, base_dir: Path):
    """A file-based sleeve's prices, read here so they travel with its tasks (None for skfolio data).

    The worker that computes the sleeve may be on a node without the file; skfolio's
    datasets ship inside skfolio and load anywhere.
    """
    if config["data"].get("source", "skfolio") == "skfolio":
        return None
    from .data import load_prices

    return load_prices(config["data"], config["universe"].get("symbols"), base_dir=base_dir)


#: Heavy modules the driver's later stages import: skfolio (meta optimize) and matplotlib (report).
_PREWARM_MODULES = (
    "skfolio.optimization",
    "skfolio.model_selection",
    "skfolio.measures",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "matplotlib.dates",
    "tradingview_scraper.meta",
    "tradingview_scraper.report",
)
_prewarm_lock = threading.Lock()
_prewarm_thread: threading.Thread | None = None


def prewarm() -> None:
    """Import the meta stages' and the report's heavy modules in a background thread, once per process.

    While the sleeves compute on Ray the driver only waits; importing skfolio and matplotlib
    then (about 2 s) takes them off the critical path, where the first meta optimize and
    the report would otherwise import them after the last sleeve (see docs/performance.md).
    """
    global _prewarm_thread
    with _prewarm_lock:
        if _prewarm_thread is None:
            _prewarm_thread = threading.Thread(target=_import_modules, args=(_PREWARM_MODULES,), name="tvs-prewarm")
            _prewarm_thread.start()


def _await_prewarm() -> None:
    """Wait for :func:`prewarm`'s imports: two threads importing one package at once can deadlock."""
    with _prewarm_lock:
        thread = _prewarm_thread
    if thread is not None:
        thread.join()


def _import_modules(names: tuple[str, ...]) -> None:
    for name in names:
        with contextlib.suppress(Exception):  # the stage that needs the module reports the error
            importlib.import_module(name)


def run_sleeve(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Compute atomic sleeve ``node_path`` (on Ray unless ``ray`` is off) and write its artifacts.

    Each risk profile's walk-forward is a task of its own (they are independent), so one
    sleeve's profiles spread over the cluster's CPUs: a run that recomputes one sleeve
    uses every core, not one. The parts are merged into the sleeve's one set of artifacts.
    """
    from .cluster import local_call
    from .sleeve import SleeveResult, health_gate, unhealthy_profiles

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    sid = spec.sleeve_id or spec.profile
    outputs = sleeve_outputs(ctx, node)
    with _stage(ctx, "sleeve", node_path, logfile, {"profile": spec.profile, "config": spec.config}, [], outputs):
        try:
            prices = _driver_prices(spec.config, ctx.base_dir)
        except PipelineError as exc:
            raise SleeveError(f"sleeve {sid!r} failed: {type(exc).__name__}: {exc}") from exc
        tasks = [
            ((sid, rp), (spec.config, [rp], sid, spec.profile, str(ctx.base_dir), prices), {})
            for rp in ctx.plan.risk_profiles
        ]
        if ctx.cluster is None:
            done = {}
            for name, args, _ in tasks:
                try:
                    done[name] = local_call(_sleeve_task, *args)
                except Exception as exc:
                    raise SleeveError(f"sleeve {sid!r} ({name[1]}) failed: {type(exc).__name__}: {exc}") from exc
        else:
            prewarm()
            cpus = float(spec.config["backtest"].get("num_cpus", 1))
            done = ctx.cluster.map(_sleeve_task, tasks, num_cpus=cpus)
        result = SleeveResult.merge([SleeveResult.from_payload(payload) for payload, _ in done.values()])
        placement = {name[1]: prov for name, (_, prov) in done.items()}
        _write_sleeve(ctx, spec, node, result, placement)
        if node_path == ROOT:  # a standalone run warns its user now; a meta run applies the policy
            try:
                warning = health_gate(f"sleeve {sid!r}", result.health, spec.config["health"], where=str(node.file("health")))
            except SleeveError as exc:
                warning = f"{exc}; a meta run consuming it stops"
            if warning:
                console_warning(warning)
        else:
            bad = unhealthy_profiles(result.health, float(spec.config["health"]["min_success_ratio"]))
            if bad:
                log.warning("sleeve %s is unhealthy: %s (a meta run consuming it stops)", sid, ", ".join(bad))


def _write_sleeve(ctx: RunContext, spec: NodeSpec, node: Node, result, placement: dict[str, dict]) -> None:
    """Write a computed sleeve's artifacts; ``placement`` maps each risk profile to where it ran."""
    for rp, record in result.weights.items():
        write_json(node.file("weights", profile=rp), record)
    write_json(node.file("health"), result.health)
    write_json(node.file("sign_test"), result.sign_test)
    first = next(iter(placement.values()))
    tasks = {
        rp: {k: prov[k] for k in ("node_id", "node_ip", "worker_pid", "duration_s")} for rp, prov in placement.items()
    }
    write_json(
        node.file("provenance"),
        {
            "computed": True,
            "run_id": ctx.run_id,
            "profile": spec.profile,
            "sleeve": spec.sleeve_id,
            "mode": first["mode"],
            "address": first["address"],
            "tasks": tasks,
        },
    )
    write_parquet(node.file("returns"), result.returns)  # last: the file Snakemake's DAG waits on


#: Artifacts a pinned sleeve directory must hold, besides ``weights_<p>.json`` per risk profile.
PIN_REQUIRED = ("returns", "health", "sign_test")


def resolve_pin(
    spec: NodeSpec, runs_root: Path, risk_profiles: list[str], run_id: str | None = None
) -> tuple[Node, dict]:
    """The sleeve directory pinned sleeve ``spec`` reuses, checked, and what it was made from.

    A pin ``run_id`` resolves to ``<runs_root>/<run_id>/sleeves/<sleeve_id>/`` (a sleeve of an
    earlier meta run) or ``<runs_root>/<run_id>/`` (a standalone run of the same atomic
    profile, from ``run_production_pipeline.py --profile <atomic>``). Never a fallback to
    another run.

    Parameters
    ----------
    spec : NodeSpec
        An atomic node with ``pin`` set.
    runs_root : Path
        Directory of run directories.
    risk_profiles : list of str
        Risk profiles the new run consumes; the pinned sleeve must hold each.
    run_id : str, optional
        The new run's id (a run cannot pin itself).

    Returns
    -------
    source : Node
        The pinned sleeve directory.
    info : dict
        ``profile``, ``direction``, ``config`` (the source's resolved config, or None when
        the pinned run has no ``manifest.resolved.json``) and ``manifest_sha256``.

    Raises
    ------
    DataError
        The pin does not resolve (the message names the sleeve and the paths looked at), the
        pinned directory lacks a required artifact or a risk profile, or it belongs to
        another profile, direction or walk-forward windows.
    """
    sid, pin = spec.sleeve_id, spec.pin
    who = f"sleeve {sid!r}: pinned run_id {pin!r}"
    if pin == run_id:
        raise DataError(f"{who} is this run's own id; pin an earlier run")
    pinned = run_node(pin, runs_root)
    if pinned.dir.is_symlink():
        raise DataError(f"{who}: run directory {pinned.dir} is a symlink (to {os.readlink(pinned.dir)}); pins are never followed through links")
    resolved = read_json(pinned.file("resolved")) if pinned.file("resolved").is_file() else None
    nodes = (resolved or {}).get("nodes") or {}
    candidates = [(pinned.child(sid), child_path(ROOT, sid)), (pinned, ROOT)]
    source, source_spec = None, None
    for cand, path in candidates:
        if resolved is not None:
            found = nodes.get(path, {}).get("kind") == "atomic" and cand.dir.is_dir()
        else:
            found = any(cand.file(k).exists() for k in PIN_REQUIRED)
        if found:
            source, source_spec = cand, nodes.get(path)
            break
    if source is None:
        looked = " or ".join(str(c.dir) for c, _ in candidates)
        raise DataError(f"{who} not found: no sleeve of that run in {looked}")
    required = [source.file(k) for k in PIN_REQUIRED] + [source.file("weights", profile=p) for p in risk_profiles]
    missing = [f.name for f in required if not f.is_file()]
    if missing:
        raise DataError(f"{who} is incomplete: {source.dir} lacks {', '.join(missing)}")
    try:  # a pinned run's files must still be what its ledger recorded
        audit.check_inputs(pinned.dir, required, hint=f"rerun run {pin!r}, or pin another run")
    except PipelineError as exc:
        raise DataError(f"{who}: {exc}") from None
    health = read_json(source.file("health"))
    profile = (source_spec or {}).get("profile") or health.get("profile")
    if profile != spec.profile:
        raise DataError(
            f"{who} ({source.dir}) is a run of profile {profile!r}, not {spec.profile!r}; "
            f"pin a run of {spec.profile!r}"
        )
    direction = health.get("direction") or read_json(source.file("weights", profile=risk_profiles[0])).get("direction")
    want = spec.config["universe"].get("direction", "LONG")
    if direction != want:
        raise DataError(f"{who} ({source.dir}) has direction {direction!r}, but profile {spec.profile!r} is {want!r}")
    config = (source_spec or {}).get("config")
    if config is not None:
        old = (config["backtest"]["train_window"], config["backtest"]["test_window"])
        new = (spec.config["backtest"]["train_window"], spec.config["backtest"]["test_window"])
        if old != new:
            raise DataError(
                f"{who} ({source.dir}) used walk-forward windows train/test {old[0]}/{old[1]}, the manifest now "
                f"says {new[0]}/{new[1]}; sleeves must share windows (rerun it, or use --execute-sleeves)"
            )
    columns = read_parquet(source.file("returns")).columns
    absent = [p for p in risk_profiles if p not in columns]
    if absent:
        raise DataError(f"{who} has no risk profile(s) {', '.join(absent)} in {source.file('returns')}")
    info = {
        "profile": profile,
        "direction": direction,
        "config": config,
        "manifest_sha256": (resolved or {}).get("manifest_sha256"),
    }
    return source, info


def check_pins(plan: Plan, runs_root: Path | str, run_id: str | None = None) -> None:
    """Resolve every pinned sleeve of ``plan`` before any work starts.

    Raises
    ------
    DataError
        The first pin that does not resolve or is unusable (see :func:`resolve_pin`).
    """
    for spec in plan.atomic_nodes():
        if spec.pin:
            resolve_pin(spec, Path(runs_root), plan.risk_profiles, run_id)


def check_data(plan: Plan, base_dir: Path | str = ".", *, include_pinned: bool = False) -> None:
    """Check the data of every sleeve ``plan`` computes before any work starts (no price is read).

    Parameters
    ----------
    plan : Plan
        The resolved run.
    base_dir : path-like
        Directory that relative ``data.path`` values are resolved against.
    include_pinned : bool
        Check pinned sleeves too (``--execute-sleeves`` recomputes them).

    Raises
    ------
    ConfigError, DataError
        From :func:`data.check_source`, prefixed with the profile.
    """
    from .data import check_source

    seen = set()
    for spec in plan.atomic_nodes():
        if (spec.pin and not include_pinned) or spec.profile in seen:
            continue
        seen.add(spec.profile)
        bt = spec.config["backtest"]
        try:
            check_source(
                spec.config["data"],
                spec.config["universe"].get("symbols"),
                base_dir=base_dir,
                min_returns=int(bt["train_window"]) + int(bt["test_window"]),
            )
        except PipelineError as exc:
            raise type(exc)(f"profile {spec.profile!r}: {exc}") from None


def pin_source(ctx: RunContext, node_path: str) -> Node:
    """The checked sleeve directory pinned node ``node_path`` reuses (see :func:`resolve_pin`)."""
    return resolve_pin(ctx.spec(node_path), ctx.runs_root, ctx.plan.risk_profiles, ctx.run_id)[0]


def run_pin(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Copy a pinned sleeve's artifacts into this run, recording where they came from.

    Raises
    ------
    DataError
        The pin does not resolve or is unusable (see :func:`resolve_pin`).
    """
    spec, node = ctx.spec(node_path), ctx.node(node_path)
    src, info = resolve_pin(spec, ctx.runs_root, ctx.plan.risk_profiles, ctx.run_id)
    outputs = sleeve_outputs(ctx, node)
    params = {"pin": spec.pin, "source": str(src.dir)}
    with _stage(ctx, "pin", node_path, logfile, params, [src.file("returns")], outputs):
        pairs = [(src.file(k), node.file(k)) for k in ("health", "sign_test")]
        pairs += [(src.file("weights", profile=p), node.file("weights", profile=p)) for p in ctx.plan.risk_profiles]
        for s, d in pairs:
            atomic_write_bytes(d, s.read_bytes())
        prov_file = src.file("provenance")
        write_json(
            node.file("provenance"),
            {
                "computed": False,
                "run_id": ctx.run_id,
                "profile": spec.profile,
                "sleeve": spec.sleeve_id,
                "pinned_run_id": spec.pin,
                "source": str(src.dir),
                "source_profile": info["profile"],
                "source_manifest_sha256": info["manifest_sha256"],
                "source_config": info["config"],
                "source_provenance": read_json(prov_file) if prov_file.is_file() else None,
                "copied": sorted(d.name for _, d in pairs) + [node.file("returns").name],
                "sha256": {d.name: audit.file_sha256(d) for _, d in pairs},
            },
        )
        write_parquet(node.file("returns"), read_parquet(src.file("returns"))[ctx.plan.risk_profiles])


# --------------------------------------------------------------------------- meta layer


def child_holdings_file(spec: NodeSpec, node: Node, profile: str) -> Path:
    """A child node's per-profile asset weights: ``weights_<p>.json`` or ``flattened_<p>.json``."""
    return node.file("flattened" if spec.is_meta else "weights", profile=profile)


def _check_health(ctx: RunContext, spec: NodeSpec) -> None:
    """Stop the meta layer of ``spec`` on an unhealthy atomic child or a failed sign test.

    Every risk profile the run consumes must have at least ``health.min_success_ratio`` of
    its walk-forward windows succeeded; a missing or empty health record is a failure.
    ``health.on_unhealthy = "warn"`` warns on the console instead of stopping. A missing or failed sign test
    (``sign_test.json``) always stops: the stream's direction cannot be trusted.

    Raises
    ------
    SleeveError
        Naming the first failing sleeve, what failed and the threshold.
    """
    from .sleeve import health_gate, sign_gate

    for cpath in spec.children:
        child = ctx.spec(cpath)
        if child.is_meta:
            continue
        node = ctx.node(cpath)
        sfile = node.file("sign_test")
        direction = child.config["universe"].get("direction", "LONG")
        sign_gate(f"sleeve {child.sleeve_id!r}", read_json(sfile) if sfile.is_file() else None, direction, str(sfile))
        hfile = node.file("health")
        health = read_json(hfile) if hfile.is_file() else {}
        warning = health_gate(f"sleeve {child.sleeve_id!r}", health, spec.config["health"], ctx.plan.risk_profiles, str(hfile))
        if warning:
            console_warning(warning)


def console_warning(message: str) -> None:
    """A warning the person running the pipeline must see: on stderr, whatever the entry point.

    Stages run as threads of the driver (the runner's or plain ``snakemake``'s), so stderr
    is the console's; the stage log keeps the line too.
    """
    log.warning("%s", message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_meta_returns(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Align the children's streams into ``meta/returns_<profile>.parquet``, every profile.

    Each child's returns are read once for all profiles; a child's periods between common
    dates are compounded into the next one (:func:`meta.aligned_returns`), counted per
    sleeve in the file's metadata (``layout.read_parquet_metadata``) and the audit record.
    """
    _await_prewarm()
    from .meta import aligned_returns, compounded_note

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    profiles = ctx.plan.risk_profiles
    inputs = [ctx.node(c).file("returns") for c in spec.children]
    checked = [ctx.node(c).file(k) for c in spec.children if not ctx.spec(c).is_meta for k in ("health", "sign_test")]
    outs = [node.file("meta_returns", profile=p) for p in profiles]
    with _stage(ctx, "meta_returns", node_path, logfile, {"profiles": profiles}, inputs + checked, outs) as rec:
        _check_health(ctx, spec)
        bt = spec.config["backtest"]
        frames = {ctx.spec(c).sleeve_id: (path, read_parquet(path)) for c, path in zip(spec.children, inputs, strict=True)}
        for profile, out in zip(profiles, outs, strict=True):
            streams = {}
            for sid, (path, frame) in frames.items():
                if profile not in frame.columns:
                    raise DataError(f"{path}: no column for risk profile {profile!r} (has {', '.join(frame.columns)})")
                streams[sid] = frame[profile]
            aligned, cal = aligned_returns(streams, min_obs=bt["train_window"] + bt["test_window"])
            write_parquet(out, aligned, metadata={"calendar": cal})
        # every profile of a sleeve shares its calendar: the last one speaks for all
        folded = {sid: c["compounded"] for sid, c in cal["sleeves"].items() if c["compounded"]}
        rec.params.update(common_dates=cal["common_dates"], compounded_periods=folded)
        if folded:
            log.info("meta_returns %s: %s", node_path, compounded_note(cal))


def run_meta_optimize(ctx: RunContext, node_path: str, profile: str, logfile: str | None = None) -> None:
    """Allocate across sleeves: ``meta/weights_<p>.json``, the stream, the cluster tree."""
    _await_prewarm()
    from .meta import meta_optimize
    from .sleeve import health_gate

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    src = node.file("meta_returns", profile=profile)
    outs = [node.file("meta_weights", profile=profile), node.file("meta_stream", profile=profile)]
    tree_file = node.file("cluster_tree", profile=profile)
    if profile in HIERARCHICAL:
        outs.append(tree_file)
    alloc, bt = spec.config["meta_allocation"], spec.config["backtest"]
    with _stage(ctx, "meta_optimize", node_path, logfile, {"profile": profile, **alloc, **bt}, [src], outs) as rec:
        record, stream, tree = _on_running_cluster(
            ctx,
            f"meta_optimize {node_path} {profile}",
            meta_optimize,
            read_parquet(src),
            profile,
            min_weight=alloc["min_weight"],
            max_weight=alloc["max_weight"],
            train_window=bt["train_window"],
            test_window=bt["test_window"],
        )
        rec.params.update(fallback=record["fallback"], fallback_reason=record["fallback_reason"])
        # The meta level answers to the same health policy as its sleeves (sleeve.health_gate).
        for err in record["walk_forward"]["errors"][:3]:
            log.info("meta %s %s: window fell back: %s", node_path, profile, err)
        warning = health_gate(
            spec.label, {"profiles": {profile: record["walk_forward"]}}, spec.config["health"], [profile],
            "its meta walk-forward",
        )
        if warning:
            console_warning(warning)
        if record["fallback"]:
            log.warning("meta %s %s: optimizer failed, equal-weight fallback: %s", node_path, profile, record["fallback_reason"])
        if profile in HIERARCHICAL:
            write_json(tree_file, {"meta_profile": spec.profile, "risk_profile": profile, **(tree or {"available": False})})
        write_json(outs[0], {"meta_profile": spec.profile, "risk_profile": profile, **record})
        write_parquet(outs[1], stream.to_frame(profile))


def _on_running_cluster(ctx: RunContext, name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the run's Ray cluster if it is already up, else in-process.

    The meta stages run as threads of the driver and would share its GIL; when the
    sleeves have started a cluster, its workers (with skfolio already imported) run the
    risk profiles' optimizations in parallel. No cluster is started for this.
    """
    if ctx.cluster is None or not ctx.cluster.is_up:
        return fn(*args, **kwargs)
    try:
        result, _ = ctx.cluster.map(fn, [(name, args, kwargs)], max_retries=1)[name]
    except SleeveError as exc:  # the backend words its errors for sleeves
        raise PipelineError(str(exc).removeprefix("sleeve ")) from exc
    return result


def run_node_returns(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """A meta node's sleeve interface: its out-of-sample streams, one column per risk profile."""
    import pandas as pd

    node = ctx.node(node_path)
    inputs = [node.file("meta_stream", profile=p) for p in ctx.plan.risk_profiles]
    out = node.file("returns")
    with _stage(ctx, "meta_stream", node_path, logfile, {}, inputs, [out]):
        frame = pd.concat([read_parquet(p) for p in inputs], axis=1, join="inner")
        frame.index.name = "date"
        write_parquet(out, frame)


def run_flatten(ctx: RunContext, node_path: str, profile: str, logfile: str | None = None) -> None:
    """Physical-asset weights of ``profile``: meta weights @ the children's asset weights."""
    _await_prewarm()
    from .meta import flatten

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    wfile = node.file("meta_weights", profile=profile)
    hfiles = {ctx.spec(c).sleeve_id: child_holdings_file(ctx.spec(c), ctx.node(c), profile) for c in spec.children}
    out = node.file("flattened", profile=profile)
    with _stage(ctx, "flatten", node_path, logfile, {"profile": profile}, [wfile, *hfiles.values()], [out]):
        sleeve_weights = read_json(wfile)["weights"]
        holdings = {sid: read_json(f)["weights"] for sid, f in hfiles.items()}
        flat = flatten(sleeve_weights, holdings)
        write_json(
            out,
            {
                "meta_profile": spec.profile,
                "risk_profile": profile,
                "run_id": ctx.run_id,
                "node": node_path,
                "sleeve_weights": sleeve_weights,
                **flat,
            },
        )


def run_resolved(ctx: RunContext, logfile: str | None = None) -> None:
    """Write ``manifest.resolved.json``: the resolved tree and the manifest's hash."""
    out = ctx.root.file("resolved")
    with _stage(ctx, "resolve", ROOT, logfile, {"profile": ctx.plan.profile}, [], [out]):
        write_json(out, {"run_id": ctx.run_id, **ctx.plan.to_dict()})


def report_inputs(ctx: RunContext, node_path: str) -> list[Path]:
    """Artifacts the report of meta node ``node_path`` reads."""
    node = ctx.node(node_path)
    files = [node.file("returns")]
    for p in ctx.plan.risk_profiles:
        files += [node.file(k, profile=p) for k in ("meta_returns", "meta_weights", "flattened", "risk")]
        if node_path == ROOT and (ctx.previous_run or ctx.holdings):
            files.append(node.file("rebalance", profile=p))
    return files


def run_report(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Write a meta node's ``report.md``, self-contained ``report.html`` and ``report_assets/``."""
    _await_prewarm()
    from . import report

    inputs = report_inputs(ctx, node_path)
    outs = report.output_files(ctx.node(node_path))
    with _stage(ctx, "report", node_path, logfile, {}, inputs, outs):
        for path, data in report.build_report(ctx, node_path).items():
            atomic_write_bytes(path, data)


# --------------------------------------------------------------------------- rebalance


def rebalance_source(ctx: RunContext, profile: str) -> Path | None:
    """The current book of ``profile``'s rebalance: the holdings file, or the previous run's flattened file."""
    if ctx.holdings:
        return Path(ctx.holdings)
    if ctx.previous_run:
        return run_node(ctx.previous_run, ctx.runs_root).file("flattened", profile=profile)
    return None


def check_rebalance(
    plan: Plan, runs_root: Path | str, run_id: str, previous_run: str | None, holdings: str | None
) -> None:
    """Check the current book of a rebalance before any work starts.

    Raises
    ------
    ConfigError
        A rebalance of an atomic profile, or a previous run that is this run.
    DataError
        The previous run lacks a risk profile's ``flattened_<profile>.json``, or the
        holdings file is unreadable or has a bad row (see :func:`rebalance.read_holdings`).
    """
    from .rebalance import read_holdings

    if not (previous_run or holdings):
        return
    if not plan.root.is_meta:
        raise ConfigError(
            f"profile {plan.profile!r} is atomic; a rebalance (previous_run / holdings) needs a meta profile's "
            "flattened weights"
        )
    if previous_run:
        if previous_run == run_id:
            raise ConfigError(f"previous_run {previous_run!r} is this run's own id; give an earlier run")
        prev = run_node(previous_run, Path(runs_root))
        missing = [p for p in plan.risk_profiles if not prev.file("flattened", profile=p).is_file()]
        if missing:
            raise DataError(
                f"previous_run {previous_run!r} ({prev.dir}) has no flattened weights for risk profile(s) "
                f"{', '.join(missing)}; give a finished meta run of the same risk profiles"
            )
    if holdings:
        read_holdings(holdings)


def run_rebalance(ctx: RunContext, profile: str, logfile: str | None = None) -> None:
    """Write ``rebalance_<profile>.json``: the trades from the current book to the flattened weights."""
    from .rebalance import read_holdings, rebalance, sleeve_weight_changes

    root = ctx.root
    target_file = root.file("flattened", profile=profile)
    source = rebalance_source(ctx, profile)
    if source is None:
        raise ConfigError("rebalance needs previous_run or holdings (--previous-run RUN_ID or --holdings FILE)")
    source = source.resolve()
    out = root.file("rebalance", profile=profile)
    frictions = ctx.plan.root.config["frictions"]
    params = {"profile": profile, "previous_run": ctx.previous_run, "holdings": ctx.holdings, **frictions}
    with _stage(ctx, "rebalance", ROOT, logfile, params, [target_file, source], [out]):
        flat = read_json(target_file)
        if ctx.holdings:
            current, prev = read_holdings(source), None
            book = {"kind": "holdings", "path": str(source), "sha256": audit.file_sha256(source)}
        else:
            prev = read_json(source)
            current = prev["weights"]
            book = {
                "kind": "previous_run",
                "run_id": ctx.previous_run,
                "meta_profile": prev.get("meta_profile"),
                "path": str(source),
                "sha256": audit.file_sha256(source),
            }
        rate = float(frictions["commission"]) + float(frictions["slippage"])
        body = rebalance(flat["weights"], current, cost_rate=rate, current_sleeves=prev is not None)
        write_json(
            out,
            {
                "meta_profile": ctx.plan.profile,
                "risk_profile": profile,
                "run_id": ctx.run_id,
                "current": book,
                "commission": float(frictions["commission"]),
                "slippage": float(frictions["slippage"]),
                "sleeve_weights": (
                    sleeve_weight_changes(flat["sleeve_weights"], prev.get("sleeve_weights") or {})
                    if prev is not None
                    else None
                ),
                **body,
            },
        )


# --------------------------------------------------------------------------- risk


def risk_inputs(ctx: RunContext, node_path: str) -> list[Path]:
    """Artifacts the risk decomposition of meta node ``node_path`` reads (every risk profile)."""
    node = ctx.node(node_path)
    return [
        node.file(k, profile=p)
        for p in ctx.plan.risk_profiles
        for k in ("meta_returns", "meta_weights", "meta_stream", "flattened")
    ]


def _leaves(ctx: RunContext, node_path: str) -> list[NodeSpec]:
    """The atomic sleeves below meta node ``node_path``, in plan order (depth first)."""
    out = []
    for c in ctx.spec(node_path).children:
        spec = ctx.spec(c)
        out += _leaves(ctx, c) if spec.is_meta else [spec]
    return out


class _AssetPaths:
    """Wealth paths of the physical positions below a node, loaded once per atomic profile.

    A position (symbol, direction) takes its prices from the first atomic sleeve (in plan
    order) holding it; a SHORT position's path compounds its synthetic-long returns
    ``-min(r, 1)``, as the sleeve's optimizer saw them. Each sleeve's prices load with its
    own universe, so the calendar is the sleeve's own.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._returns: dict[str, object] = {}

    def wealth(self, spec: NodeSpec, symbol: str, direction: str):
        import pandas as pd

        from .data import load_prices, prices_to_returns
        from .sleeve import synthetic_long

        if spec.profile not in self._returns:
            prices = load_prices(spec.config["data"], spec.config["universe"].get("symbols"), base_dir=self.base_dir)
            self._returns[spec.profile] = (prices.index[0], prices_to_returns(prices))
        first, raw = self._returns[spec.profile]
        r = raw[[symbol]]
        r = (synthetic_long(r) if direction == "SHORT" else r)[symbol]
        wealth = (1.0 + r).cumprod()
        start = pd.Series([1.0], index=pd.DatetimeIndex([first], name=wealth.index.name))
        return pd.concat([start, wealth]).rename(f"{symbol} {direction}")


def _asset_risk(ctx, node_path, profile, flat, window_dates, paths: _AssetPaths) -> dict:
    """Ex-ante Euler contributions of the node's flattened book, per position and per sleeve."""
    import pandas as pd

    from .data import periods_per_year
    from .risk import common_date_returns, euler_contributions

    holders: dict[tuple[str, str], NodeSpec] = {}
    for leaf in _leaves(ctx, node_path):
        for row in read_json(ctx.node(leaf.path).file("weights", profile=profile))["weights"]:
            if row["weight"] > 0:
                holders.setdefault((row["symbol"], row["direction"]), leaf)
    rows = flat["weights"]
    columns, weights = {}, {}
    for row in rows:
        key = (row["symbol"], row["direction"])
        if key not in holders:
            raise DataError(f"risk: no atomic sleeve below node {node_path!r} holds {key[0]} {key[1]} ({profile})")
        name = f"{key[0]} {key[1]}"
        columns[name] = common_date_returns(paths.wealth(holders[key], *key), window_dates)
        weights[name] = float(row["weight"])
    frame = pd.DataFrame(columns)
    res = euler_contributions(frame, pd.Series(weights))
    sigma, ppy = res["volatility"], periods_per_year(frame.index)
    out_rows, by_sleeve = [], {}
    for row in rows:
        pos = res["positions"][f"{row['symbol']} {row['direction']}"]
        parts = {s: float(c) * pos["marginal"] for s, c in row.get("sleeves", {}).items()}
        for s, part in parts.items():
            agg = by_sleeve.setdefault(s, {"weight": 0.0, "contribution": 0.0})
            agg["weight"] += float(row["sleeves"][s])
            agg["contribution"] += part
        out_rows.append({"symbol": row["symbol"], "direction": row["direction"], **pos, "sleeves": parts})
    for agg in by_sleeve.values():
        agg["share"] = agg["contribution"] / sigma if sigma > 0 else None
    out_rows.sort(key=lambda r: (-r["contribution"], r["symbol"], r["direction"]))
    return {
        "volatility": sigma,
        "annualised_volatility": sigma * ppy**0.5,
        "periods_per_year": ppy,
        "n_obs": res["n_obs"],
        "start": frame.index[0].date().isoformat(),
        "end": frame.index[-1].date().isoformat(),
        "rows": out_rows,
        "by_sleeve": by_sleeve,
    }


def run_risk(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Write ``risk_<profile>.json`` of meta node ``node_path`` for every risk profile.

    Ex-ante on the last training window of the meta allocation (``fitted_on`` of
    ``meta/weights_<p>.json``): Euler contributions of the sleeves (meta weights on the
    sleeves' streams, what the meta optimizer fitted on) and of the physical positions
    (the flattened book held over the same common dates, each asset's returns compounded
    between them). Out of sample: each sleeve's realised contribution to the stream.
    """
    _await_prewarm()
    import pandas as pd

    from .data import periods_per_year
    from .risk import euler_contributions, realised_contributions

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    inputs = risk_inputs(ctx, node_path)
    outs = [node.file("risk", profile=p) for p in ctx.plan.risk_profiles]
    paths = _AssetPaths(ctx.base_dir)
    with _stage(ctx, "risk", node_path, logfile, {"profiles": ctx.plan.risk_profiles}, inputs, outs):
        for profile, out in zip(ctx.plan.risk_profiles, outs, strict=True):
            returns = read_parquet(node.file("meta_returns", profile=profile))
            meta = read_json(node.file("meta_weights", profile=profile))
            flat = read_json(node.file("flattened", profile=profile))
            stream = read_parquet(node.file("meta_stream", profile=profile))[profile]
            fitted = meta["fitted_on"]
            window = returns.loc[pd.Timestamp(fitted["start"]) : pd.Timestamp(fitted["end"])]
            first = returns.index.get_loc(window.index[0])
            dates = returns.index[max(first - 1, 0) : first + len(window)]
            sleeves = euler_contributions(window, pd.Series(meta["weights"], dtype=float))
            ppy = periods_per_year(window.index)
            windows = meta.get("windows")
            write_json(
                out,
                {
                    "meta_profile": spec.profile,
                    "risk_profile": profile,
                    "run_id": ctx.run_id,
                    "node": node_path,
                    "convention": (
                        "Euler: RC_i = w_i (S w)_i / sigma, sigma = sqrt(w' S w) = sum_i RC_i; S is skfolio's "
                        "EmpiricalCovariance (ddof 1) of the window's per-period returns"
                    ),
                    "window": {**fitted, "periods_per_year": ppy},
                    "sleeves": {
                        "volatility": sleeves["volatility"],
                        "annualised_volatility": sleeves["volatility"] * ppy**0.5,
                        "rows": sleeves["positions"],
                    },
                    "assets": _asset_risk(ctx, node_path, profile, flat, dates, paths),
                    "realised": (
                        realised_contributions(returns, stream, windows["start"], windows["weights"])
                        if windows
                        else None
                    ),
                },
            )
