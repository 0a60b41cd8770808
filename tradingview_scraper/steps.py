"""The table of the workflow's steps: one entry per rule, its function, named inputs and ledger params.

A step is a function of data (:class:`Step` ``function``) plus what it reads: files of its own
node (:class:`Own`), of each child node (:class:`Children`) and from outside the run
(:class:`Outside`). From one entry come the rule's named inputs (``rule_inputs.step_inputs``,
``Wiring.inputs``), its code trigger (:func:`code`), the final targets it adds and the patterns
of the artifacts it introduces (``layout.NODE_FILES``); one adapter,
``stages.run_step``, reads the inputs by file type, calls the function, writes the outputs
atomically and records the step in the run's ledger.

The workflow imports this module when it is parsed: it imports nothing heavy, and names each
function by its dotted path, imported only when the step runs or its code is hashed.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Parquet(NamedTuple):
    """A parquet file's frame and the metadata kept beside it (``layout.write_parquet``, ``layout.read_parquet_metadata``).

    A step returns one for a parquet output that carries metadata; an :class:`Own` input with
    ``metadata=True`` is given to its function as one.
    """

    frame: Any
    metadata: dict


@dataclass(frozen=True)
class Own:
    """A file of the job's own node: layout name ``artifact``.

    ``per``: ``None`` (one file), ``"profile"`` (the job's risk profile) or ``"profiles"`` (one
    file per risk profile of the plan, in its order). ``when="book"``: only at the root of a run
    with a current book (a rebalance); ``when="previous_run"``: only in a run whose current book
    is a previous run's. ``metadata=True``: a parquet file read as :class:`Parquet`.
    """

    artifact: str
    per: str | None = None
    when: str | None = None
    metadata: bool = False


@dataclass(frozen=True)
class Children:
    """Each child node's file, named ``<input>:<sleeve id>`` in the rule's inputs (``stages.child_input``).

    ``atomic`` / ``meta``: the layout name read from an atomic / a nested meta child (None:
    that kind gives none); ``per`` as for :class:`Own`. ``read=False``: an edge of the DAG
    only (the job runs after that file exists), not read by the step. ``when="limits"``: only
    at a meta node with book limits (``meta_allocation.book``).
    """

    atomic: str | None
    meta: str | None = None
    per: str | None = None
    read: bool = True
    when: str | None = None


@dataclass(frozen=True)
class Outside:
    """Files from outside the run, as ``Wiring.<source>(node_dir, profile)`` names them (a path, a list, or a named dict).

    A step's function gets them as paths. Their bytes are the rule's ``content`` param
    (:func:`rule_params`), so new bytes rerun it whatever their mtime. ``read=False``: declared,
    not read as such by the step.
    """

    source: str
    read: bool = True


Input = Own | Children | Outside


@dataclass(frozen=True)
class Step:
    """One rule's step.

    Parameters
    ----------
    name : str
        The step's one name: its rule, its ledger stage, its log and its progress label.
    function : str
        ``"module:function"`` below the package. A step's function takes its inputs by
        name (a parquet file as a DataFrame, a JSON file as its value, a file per risk profile
        as profile -> value, a child's as sleeve id -> value, files from outside the run as
        paths) and what it needs of the job by name (``node``, ``node_dir``, ``children``,
        ``profile``, ``profiles``, ``run_id``, ``plan``, ``offload``, ``cluster``,
        ``base_dir``, ``runs_root``, ``windows``, ``note``, ``warn``, ``previous_run``,
        ``holdings``, ``reads``, ``report_store``: :class:`stages._step.Job`); it returns its
        output's value (bytes are written as they are, a :class:`Parquet` with its metadata), or
        output name -> value.
    inputs : dict of str -> Own | Children | Outside
        The rule's named inputs, in order.
    ledger : callable, optional
        ``job -> dict``: the params recorded in the ledger (default none).
    numeric : bool
        The step fits skfolio models or draws figures in the driver: it waits for the one
        background thread that imports skfolio and matplotlib (``stages.prewarm``).
    targets : tuple of str
        Layout names of its outputs that are final targets at every meta node (one per risk
        profile where the pattern has ``{profile}``).
    params : dict of str -> str
        The rule's settings params: param name -> the method of ``Wiring`` giving its value (what
        the step's result depends on besides its inputs' content and code). The code trigger
        (:func:`code`) and the bytes of the :class:`Outside` files (``content``) are added by
        :func:`rule_params`.
    reuse : bool
        A later run may take the step's outputs from an earlier run whose job had the same
        params, code and input bytes (``stages.run_step``, the runs root's node store). Only
        for a step whose outputs are a function of those alone: never one that writes the
        run's identity (it asks for ``run_id``), a book or the report.
    """

    name: str
    function: str
    inputs: Mapping[str, Input] = field(default_factory=dict)
    ledger: Callable[[object], dict] | None = None
    numeric: bool = False
    targets: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    reuse: bool = False

    def load(self) -> Callable:
        """The step's function (imported now)."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)


_META_CHILDREN = {
    "returns": Children("returns", "returns"),
    "health": Children("health"),
    "sign_test": Children("sign_test"),
    # A nested meta child's flattened books (its sleeve interface with its returns): an edge of the DAG, not read.
    "flattened": Children(None, "flattened", per="profiles", read=False),
}
#: A meta node's allocation, windows and health policy.
_META = {"meta": "meta_params"}
_OWN_META = {k: Own(k, per="profiles") for k in ("meta_returns", "meta_weights", "meta_stream", "flattened")}


#: Patterns of the artifacts the steps introduce (layout name -> path below the node),
#: merged into ``layout.NODE_FILES``.
FILES: dict[str, str] = {"orders": "orders_{profile}.csv"}

#: Every rule's step, by name.
STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        # A reused sleeve keeps the provenance of the run that computed it (its ``run_id``).
        Step("sleeve", "stages._sleeves:sleeve", {"prices": Outside("sleeve_prices")}, params={"sleeve": "sleeve_params"}, reuse=True,
             ledger=lambda job: {"profile": job.node.profile, "config": job.node.config}),  # fmt: skip
        Step("pinned_sleeve", "stages._pins:pinned_sleeve", {"source": Outside("pin_source")},
             params={"sleeve": "sleeve_params"}, ledger=lambda job: {"pin": job.node.pin}),  # fmt: skip
        Step("meta_returns", "stages._meta:meta_returns", _META_CHILDREN, numeric=True, params=_META, reuse=True,
             ledger=lambda job: {"profiles": job.profiles}),  # fmt: skip
        Step(
            "meta_optimize",
            "stages._meta:meta_optimize",
            # the children's books: only where book limits are enforced against them
            {"returns": Own("meta_returns", per="profile"),
             "books": Children("weights", "flattened", per="profile", when="limits")},
            ledger=lambda job: {"profile": job.profile, **job.node.config["meta_allocation"], **job.node.config["backtest"]},
            numeric=True,
            params=_META,
            reuse=True,
        ),
        Step("node_returns", "compose:node_returns", {"streams": Own("meta_stream", per="profiles")}, reuse=True),
        Step(
            "flatten",
            "stages._meta:flatten",
            {"meta_weights": Own("meta_weights", per="profile"), "holdings": Children("weights", "flattened", per="profile")},
            ledger=lambda job: {"profile": job.profile},
            numeric=True,
        ),
        Step("risk", "risk_book:node_risk", {**_OWN_META, "prices": Outside("risk_prices")},
             ledger=lambda job: {"profiles": job.profiles}, numeric=True, targets=("risk",),
             params={"data": "risk_params"}),  # fmt: skip
        Step(
            "report",
            "report:node_report",
            {"returns": Own("returns"), "meta_returns": Own("meta_returns", per="profiles", metadata=True),
             **{k: Own(k, per="profiles") for k in ("meta_weights", "flattened", "risk")},
             "rebalance": Own("rebalance", per="profiles", when="book")},
            numeric=True,
            targets=("report_md", "report_html"),
        ),  # fmt: skip
        Step(
            "rebalance",
            "current_book:rebalance_file",
            # this run's last date and the previous run's: where a previous run's book drifts; the
            # prices: read through the sleeves' data (their bytes are in the content param)
            {"target": Own("flattened", per="profile"), "current": Outside("rebalance_book"),
             "returns": Own("returns", when="previous_run"), "since": Outside("rebalance_since"),
             "prices": Outside("rebalance_prices", read=False)},
            ledger=lambda job: {"profile": job.profile, "previous_run": job.previous_run, "holdings": job.holdings,
                                **job.plan.root.config["frictions"], **({"trading": job.plan.trading} if job.plan.trading else {})},
            params={"book": "rebalance_params"},
        ),  # fmt: skip
        # External sleeves (issue 22): a strategy's own files into the sleeve interface.
        Step("external_sleeve", "external:sleeve_interface", {"files": Outside("external_files")},
             params={"external": "external_params"},
             ledger=lambda job: {"sleeve": job.node.sleeve_id, "external": job.node.config["external"]}),  # fmt: skip
        # Issue 24: the orders of a rebalance with trading settings, a view of its file.
        Step("orders", "trading:orders_csv", {"rebalance": Own("rebalance", per="profile")},
             ledger=lambda job: {"profile": job.profile}),  # fmt: skip
        Step("resolved_manifest", "stages._meta:resolved_manifest", ledger=lambda job: {"profile": job.plan.profile},
             params={"plan": "plan_params"}),  # fmt: skip
    )
}


def step(name: str) -> Step:
    """The step ``name`` (a rule's name; a ``use rule`` variant is named by the step it varies)."""
    return STEPS[name]


#: The param of a step with files from outside the run: their bytes' digest (``Wiring.outside_content``).
CONTENT = "content"


def rule_params(name: str) -> list[str]:
    """Rule ``name``'s params besides its code trigger: its entry's, and :data:`CONTENT` if it has an :class:`Outside` input."""
    entry = step(name)
    return [*entry.params, *([CONTENT] if any(isinstance(s, Outside) for s in entry.inputs.values()) else [])]


def meta_targets() -> list[str]:
    """Layout names of the final targets at every meta node, in the table's order."""
    return [t for s in STEPS.values() for t in s.targets]


def code(name: str) -> str:
    """The code trigger of step ``name`` (a rule's ``code`` param): ``"<name>@<digest>"``.

    The digest covers what the step's function and the adapter that runs it reach
    (``codehash.code_hash``: package code by its normalized AST, libraries by version).
    """
    return codes([name])[name]


def codes(names=None) -> dict[str, str]:
    """The code triggers of steps ``names`` (default every step), the adapter's part computed once (see :func:`code`)."""
    from . import codehash, stages

    adapter = codehash.code_hash(stages.run_step)
    out = {}
    for name in names or STEPS:
        entry = step(name)
        # by its dotted name: hashing reads the sources, so the workflow's parse imports no step module
        parts = [adapter, codehash.code_hash(entry.function), _entry_digest(entry)]
        out[name] = f"{name}@{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:20]}"
    return out


def _entry_digest(entry: Step) -> str:
    """What the adapter does with the entry: its declarations, and its ledger function's code.

    The rest of the table does not count: adding a step reruns no other rule.
    """
    code = _code(entry.ledger.__code__) if entry.ledger else None
    return repr((entry.function, list(entry.inputs.items()), entry.numeric, code))


def _code(code) -> tuple:
    """A code object by its bytecode, constants and names; a nested one (a comprehension's) the same
    way, not by its repr, which holds its address and would change the trigger in every process."""
    consts = tuple(_code(c) if hasattr(c, "co_code") else c for c in code.co_consts)
    return code.co_code.hex(), repr(consts), code.co_names


def reached(name: str) -> dict[str, set[str]]:
    """Package module -> definitions step ``name`` reaches (its function's and the adapter's; see :func:`code`)."""
    from . import codehash, stages

    return codehash.reached(stages.run_step, step(name).load())
