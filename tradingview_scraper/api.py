"""The public Python API: a whole plan in memory, or the file-target pipeline, from Python."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path

import pandas as pd

from ._args import check_args
from .errors import ConfigError
from .layout import RUNS_ROOT, check_runs_root, read_json, read_parquet
from .manifest import DEFAULT_MANIFEST, ROOT, NodeSpec, Plan, load_plan, parse_risk_profiles


@dataclass
class NodeResult:
    """One node of a plan, computed: the same sleeve interface every node exposes.

    Attributes
    ----------
    path : str
        Plan path (``"."`` for the root, ``"sleeves/a/sleeves/b"`` below it).
    returns : DataFrame of shape (n_dates, n_risk_profiles)
        The node's out-of-sample stream per risk profile (what a parent consumes).
    holdings : dict of risk profile -> list of dict
        Physical-asset rows (``symbol``, ``direction``, ``weight``, ``net_weight``): an
        atomic sleeve's own weights, a meta node's flattened weights.
    health, sign_test : dict
        An atomic sleeve's walk-forward health and SHORT sign test (empty for meta nodes).
    meta_returns, meta_weights, flattened : dict of risk profile -> ...
        A meta node's aligned sleeve returns (DataFrame of shape (n_common_dates,
        n_sleeves)), its meta allocation record and its flattened holdings record: what
        the pipeline writes to ``meta/returns_<p>.parquet``, ``meta/weights_<p>.json`` and
        ``flattened_<p>.json`` (less the run id), computed by the same functions
        (:mod:`~tradingview_scraper.compose`).
    warnings : list of str
        Warnings a ``health`` policy let through: sleeves whose walk-forward windows differ
        from the node's (``on_parity_mismatch = "warn"``), unhealthy nodes (``on_unhealthy = "warn"``),
        and the atomic children's data-quality findings (``health.data_quality``).
    records : dict of risk profile -> dict
        An atomic sleeve's ``weights_<profile>.json`` records (their per-window weights
        included under a parent with book limits).
    """

    path: str
    spec: NodeSpec
    returns: pd.DataFrame
    holdings: dict[str, list[dict]]
    health: dict = field(default_factory=dict)
    sign_test: dict = field(default_factory=dict)
    meta_returns: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta_weights: dict[str, dict] = field(default_factory=dict)
    flattened: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)


@dataclass
class PlanResult:
    """A plan computed in memory by :func:`run_plan`: every node, and views of the root."""

    plan: Plan
    nodes: dict[str, NodeResult]

    @property
    def root(self) -> NodeResult:
        return self.nodes[ROOT]

    def _node(self, node: str) -> NodeResult:
        if node not in self.nodes:
            raise ConfigError(f"node {node!r} is not in the plan: use one of {', '.join(map(repr, self.nodes))}")
        return self.nodes[node]

    def _profile(self, risk_profile: str) -> str:
        if risk_profile not in self.plan.risk_profiles:
            raise ConfigError(
                f"risk profile {risk_profile!r} was not computed: use one of {', '.join(map(repr, self.plan.risk_profiles))}"
            )
        return risk_profile

    @property
    def risk_profiles(self) -> list[str]:
        return self.plan.risk_profiles

    def _meta(self, node: str) -> NodeResult:
        result = self._node(node)
        if not result.spec.is_meta:
            raise ConfigError(f"node {node!r} is an atomic sleeve: sleeve streams and meta weights belong to meta nodes")
        return result

    def sleeve_streams(self, risk_profile: str, node: str = ROOT) -> pd.DataFrame:
        """DataFrame of shape (n_common_dates, n_sleeves): the aligned streams a meta node allocates over."""
        return self._meta(node).meta_returns[self._profile(risk_profile)]

    def meta_weights(self, risk_profile: str, node: str = ROOT) -> pd.Series:
        """Series of sleeve id -> meta weight (sums to 1)."""
        return pd.Series(self._meta(node).meta_weights[self._profile(risk_profile)]["weights"], name=risk_profile)

    def holdings(self, risk_profile: str, node: str = ROOT) -> pd.DataFrame:
        """DataFrame of shape (n_positions, 4): symbol, direction, weight, net_weight."""
        rows = self._node(node).holdings[self._profile(risk_profile)]
        return pd.DataFrame(rows, columns=["symbol", "direction", "weight", "net_weight"])

    def metrics(self, node: str = ROOT) -> pd.DataFrame:
        """The report's headline measures of the node's stream, one row per risk profile."""
        from .report import calendar, performance

        returns = self._node(node).returns
        periods, _ = calendar(returns.index)
        return pd.DataFrame({rp: performance(returns[rp], periods) for rp in returns.columns}).T


def run_plan(
    profile: str,
    *,
    manifest: str | Path = DEFAULT_MANIFEST,
    profiles: list[str] | str | None = None,
    base_dir: str | Path | None = None,
    runs_root: str | Path = RUNS_ROOT,
    max_workers: int | None = 1,
) -> PlanResult:
    """Compute a whole plan in memory: sleeves, gates, meta returns, meta optimize, flatten.

    The same functions the workflow's stages call, in the same order, with the same
    health and sign-test gates; nothing is written. Nested meta profiles recurse.

    Parameters
    ----------
    profile : str
        A meta profile (or an atomic one: its one sleeve) of ``manifest``.
    manifest : path-like
        The manifest JSON (default ``config/manifest.json`` of the working directory).
    profiles : list of str or comma-separated str, optional
        Risk profiles (default: the profile's own list).
    base_dir : path-like, optional
        Directory relative ``data.path`` values resolve against (default: the working directory).
    runs_root : path-like
        Where pinned sleeves' earlier runs are (default ``data/runs``).
    max_workers : int or None
        Processes computing atomic sleeves at once (1: in this process; None: every core).

    Returns
    -------
    PlanResult

    Raises
    ------
    ConfigError, DataError, SleeveError, MetaError
        The same errors, with the same one-line messages, as the file-target pipeline; a
        ConfigError naming the argument for an argument of the wrong type.
    """
    from .stages import check_data, check_pins

    check_args(
        "run_plan",
        profile=(profile, (str,), False),
        manifest=(manifest, (str, PathLike), False),
        profiles=(profiles, (str, list, tuple), True),
        base_dir=(base_dir, (str, PathLike), True),
        runs_root=(runs_root, (str, PathLike), False),
        max_workers=(max_workers, (int,), True),
    )
    check_runs_root(runs_root, writable=False)
    plan = load_plan(profile, manifest, parse_risk_profiles(profiles))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    check_pins(plan, runs_root)
    check_data(plan, base)
    atomic = _compute_atomic(plan, base, Path(runs_root), max_workers)
    nodes: dict[str, NodeResult] = dict(atomic)
    for spec in sorted(plan.meta_nodes(), key=lambda s: -s.path.count("/")):  # children before parents
        nodes[spec.path] = _compute_meta(plan, spec, nodes)
    return PlanResult(plan, nodes)


def run_pipeline(profile: str, **options) -> object:
    """Run the file-target pipeline (``workflow/Snakefile`` through Snakemake's API).

    ``options`` are those of :class:`~tradingview_scraper.orchestration.pipeline.MetaPipeline`
    (``run_id``, ``manifest``, ``profiles``, ``execute_sleeves``, ``cores``, ``ray``, ...).
    Returns its ``RunResult`` (``run_id``, ``run_dir``, the jobs).

    Raises
    ------
    ConfigError
        An unknown option, an option of the wrong type, or a setting the pipeline refuses.
    PipelineError
        A stage failed (the root cause's one line).
    """
    from .orchestration.pipeline import MetaPipeline

    check_args("run_pipeline", profile=(profile, (str,), False))
    known = [f.name for f in fields(MetaPipeline) if f.name != "meta_profile"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; the options are: {', '.join(known)}")
    return MetaPipeline(profile, **options).execute()


def _sleeve_job(spec: NodeSpec, risk_profiles: list[str], base_dir: str):
    """One atomic sleeve computed (in a pool's process: its returns come back as Arrow, see ``SleeveResult``)."""
    from .sleeve import compute_sleeve

    sid = spec.sleeve_id or spec.profile
    return compute_sleeve(spec.config, risk_profiles, sleeve_id=sid, profile=spec.profile, base_dir=base_dir)


def _compute_atomic(plan: Plan, base: Path, runs_root: Path, max_workers: int | None) -> dict[str, NodeResult]:
    rps = plan.risk_profiles
    computed = [s for s in plan.atomic_nodes() if not s.pin]
    if max_workers == 1 or len(computed) <= 1:
        results = [_sleeve_job(s, rps, str(base)) for s in computed]
    else:
        with ProcessPoolExecutor(max_workers=max_workers) as pool:
            results = list(pool.map(_sleeve_job, computed, [rps] * len(computed), [str(base)] * len(computed)))
    out = {}
    for spec, res in zip(computed, results, strict=True):
        holdings = {rp: rec["weights"] for rp, rec in res.weights.items()}
        out[spec.path] = NodeResult(spec.path, spec, res.returns, holdings, res.health, res.sign_test, records=res.weights)
    for spec in plan.atomic_nodes():
        if spec.pin:
            out[spec.path] = _pinned(spec, runs_root, rps)
    for spec in plan.external_nodes():
        out[spec.path] = _external(spec, base, rps)
    return out


def _external(spec: NodeSpec, base: Path, rps: list[str]) -> NodeResult:
    """An external sleeve read from its files (:mod:`external`) by its workflow step's function."""
    from .external import external_files, sleeve_interface

    res = sleeve_interface(spec, rps, "", external_files(spec.config, rps, base))
    holdings = {rp: rec["weights"] for rp, rec in res["weights"].items()}
    return NodeResult(spec.path, spec, res["returns"], holdings, res["health"], res["sign_test"])


def _pinned(spec: NodeSpec, runs_root: Path, rps: list[str]) -> NodeResult:
    from .stages import resolve_pin

    src, _ = resolve_pin(spec, runs_root, rps)
    holdings = {rp: read_json(src.file("weights", profile=rp))["weights"] for rp in rps}
    return NodeResult(
        spec.path,
        spec,
        read_parquet(src.file("returns"))[rps],
        holdings,
        read_json(src.file("health")),
        read_json(src.file("sign_test")),
    )


def _compute_meta(plan: Plan, spec: NodeSpec, nodes: Mapping[str, NodeResult]) -> NodeResult:
    """One meta node from its children's results: the stages' gates and composition (:mod:`compose`)."""
    from .compose import compose_profile, node_returns
    from .health import ChildRecords, children_gate

    rps = plan.risk_profiles
    children = [nodes[c] for c in spec.children]
    specs = [c.spec for c in children]
    records = [ChildRecords(c.spec, c.health, c.sign_test) for c in children]
    warnings = [*spec.config.get("parity_warnings", []), *children_gate(spec, records, rps)]
    warnings += [
        f"sleeve {r.spec.sleeve_id!r}: data {f['check']}: {f['message']}"
        for r in records
        if not r.spec.is_meta
        for f in (r.health or {}).get("data_quality", [])
    ]
    result = NodeResult(spec.path, spec, pd.DataFrame(), {}, warnings=warnings)
    returns = {c.spec.sleeve_id: c.returns for c in children}
    streams = []
    for rp in rps:
        books = {
            c.spec.sleeve_id: c.flattened[rp] if c.spec.is_meta else c.records.get(rp, {"weights": c.holdings[rp]})
            for c in children
        }
        composed = compose_profile(spec, specs, returns, books, rp)
        if composed.warning:
            result.warnings.append(composed.warning)
        result.meta_returns[rp] = composed.aligned
        result.meta_weights[rp] = composed.weights
        result.flattened[rp] = composed.flattened
        result.holdings[rp] = composed.flattened["weights"]
        streams.append(composed.stream.to_frame(rp))
    result.returns = node_returns(streams)
    return result
