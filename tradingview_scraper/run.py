"""The settings of one run (plan, run id, directories, compute mode), shared by every stage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .layout import RUNS_ROOT, Node, check_name, new_run_id, node_at, run_node, store_dir
from .manifest import (
    DEFAULT_MANIFEST,
    ROOT,
    NodeSpec,
    Plan,
    load_plan,
    parse_risk_profiles,
)

if TYPE_CHECKING:
    from .cluster import Cluster


def _as_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ConfigError(f"config {key}={value!r} is not a boolean; use true or false")


@dataclass
class RunContext:
    """Everything a stage needs to know about its run, built from the Snakemake config.

    ``cluster`` is the run's Ray cluster (None: sequential), which the run's owner starts.
    """

    plan: Plan
    run_id: str
    runs_root: Path
    execute_sleeves: bool = False
    cluster: Cluster | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    #: The current book of a rebalance: an earlier run's id, or a holdings file (not both).
    previous_run: str | None = None
    holdings: str | None = None
    #: Reuse earlier runs' work (node artifacts, walk-forward window fits) from the runs root's store.
    reuse: bool = True

    @property
    def root(self) -> Node:
        return run_node(self.run_id, self.runs_root)

    @property
    def run_dir(self) -> Path:
        return self.root.dir

    def store(self, kind: str) -> Path | None:
        """The runs root's store of ``kind`` (:func:`layout.store_dir`), None when reuse is off."""
        return store_dir(self.runs_root, kind) if self.reuse else None

    def node(self, path: str) -> Node:
        """Node of plan path ``path`` (``"."`` or ``"sleeves/a/sleeves/b"``)."""
        return self.root if path == ROOT else node_at(self.run_dir, path)

    def spec(self, path: str) -> NodeSpec:
        return self.plan.nodes[path]

    def path_of(self, node_dir: str | Path) -> str:
        """Plan path of a node directory (inverse of :meth:`node`)."""
        rel = os.path.relpath(Path(node_dir), self.run_dir)
        return ROOT if rel == "." else Path(rel).as_posix()

    @classmethod
    def from_config(cls, config: dict, *, environ: dict | None = None) -> RunContext:
        """Resolve a Snakemake-style config (scalars, ``profile`` required) into a context.

        A missing run id is generated; the process owning the run passes it (and the
        cluster's address and token file) to its jobs as config, so a job needs nothing from
        the environment (``environ``: see :func:`run_cluster`).
        """
        env = os.environ if environ is None else environ
        profile = config.get("profile")
        if not profile:
            raise ConfigError("no profile given: use --config profile=<meta profile> (e.g. meta_demo)")
        run_id = config.get("run_id") or new_run_id()
        check_name(str(run_id), "run id")
        execute = _as_bool(config.get("execute_sleeves", False), "execute_sleeves")
        plan = load_plan(
            str(profile), config.get("manifest") or DEFAULT_MANIFEST, parse_risk_profiles(config.get("profiles") or None)
        )
        if execute:
            for node in plan.atomic_nodes():
                node.pin = None
        cpus = config.get("ray_num_cpus")
        cluster = run_cluster(
            _as_bool(config.get("ray", True), "ray"),
            str(config["ray_address"]) if config.get("ray_address") else None,
            config.get("ray_token_path") or None,
            num_cpus=int(cpus) if cpus else None,
            mode=config.get("ray_mode") or None,
            environ=env,
        )
        previous, holdings = rebalance_book(config.get("previous_run"), config.get("holdings"))
        return cls(
            plan=plan,
            run_id=str(run_id),
            runs_root=Path(config.get("runs_root") or RUNS_ROOT),
            execute_sleeves=execute,
            cluster=cluster,
            previous_run=previous,
            holdings=holdings,
            reuse=_as_bool(config.get("reuse", True), "reuse"),
        )


def run_cluster(
    ray: bool,
    address: str | None,
    token_path: str | None,
    *,
    num_cpus: int | None = None,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Cluster | None:
    """The run's Ray cluster as configured; nothing starts.

    Parameters
    ----------
    ray : bool
        Dispatch sleeves to Ray; False gives None (sequential, in-process).
    address, token_path : str, optional
        An existing cluster and its token file. Unset, ``RAY_ADDRESS`` and (only with an
        address) ``RAY_AUTH_TOKEN_PATH`` of ``environ`` stand in; no address at all means a
        private loopback cluster.
    num_cpus : int, optional
        CPUs of a private cluster.
    mode : {"private", "external"}, optional
        What provenance records (see :class:`~tradingview_scraper.cluster.Cluster`).
    environ : mapping, optional
        The environment read for the defaults (default ``os.environ``).

    Returns
    -------
    Cluster or None

    Raises
    ------
    ConfigError
        An invalid address or CPU count (from :class:`~tradingview_scraper.cluster.Cluster`).
    """
    if not ray:
        return None
    from .cluster import Cluster

    env = os.environ if environ is None else environ
    address = address or env.get("RAY_ADDRESS") or None
    token = token_path or (env.get("RAY_AUTH_TOKEN_PATH") if address else None)
    return Cluster(address, token_path=token or None, num_cpus=num_cpus, mode=mode)


def rebalance_book(previous_run: object, holdings: object) -> tuple[str | None, str | None]:
    """The checked ``previous_run`` / ``holdings`` settings (empty means unset).

    Raises
    ------
    ConfigError
        Both are set, or ``previous_run`` is not a safe run id.
    """
    previous = str(previous_run) if previous_run not in (None, "") else None
    book = str(holdings) if holdings not in (None, "") else None
    if previous and book:
        raise ConfigError(
            f"previous_run={previous!r} and holdings={book!r} are both set; the current book is one of them"
        )
    if previous == "latest":  # history.LATEST: the runner resolves it; a job must never pick its own
        raise ConfigError(
            "previous_run=latest is resolved by the runner (tvs run, the scripts, make); with the plain snakemake "
            "command give the run id (tvs runs --profile <profile> lists them)"
        )
    if previous:
        check_name(previous, "previous_run")
    return previous, book
