"""The rules' named inputs and patterns: node constraints, literal spellings of paths, final targets.

Plain functions of a :class:`run.RunContext` that :class:`wiring.Wiring` forwards to the
rules (this module never imports Snakemake). Each returns path strings, as Snakemake expects.
"""

from __future__ import annotations

import gc
from pathlib import Path

from . import deps, stages, steps
from .errors import ConfigError
from .layout import (
    NODE_FILES,
    literal_input,
    regex_literal,
    run_node,
    wildcard_like,
)
from .manifest import ROOT
from .run import RunContext

#: A pattern that matches nothing: the constraint of a node kind the plan does not have.
NOTHING = "(?!)"


def alternation(dirs: list[Path | str]) -> str:
    """A regex matching exactly one of ``dirs``."""
    return "|".join(regex_literal(d) for d in dirs) or NOTHING


def computed_sleeve_pattern(run_dir: Path | str, excluded: list[Path | str]) -> str:
    """A regex for the ``{node}`` of a computed sleeve: any node directory but ``excluded``.

    A node directory is the run directory or a chain of ``sleeves/<id>`` below it. The
    lookahead refuses a value that is exactly an excluded directory (one not continued by
    ``/sleeves/<id>``), whatever the output's path below the node looks like; it costs the
    same for ten sleeves or ten thousand, where an alternation of every sleeve would not.
    """
    node = rf"{regex_literal(run_dir)}(?:/sleeves/[^/]+)*"
    if not excluded:
        return node
    return rf"(?!(?:{alternation(excluded)})(?!/sleeves/[^/]+)){node}"


def literal_files(files, node_dir: str):
    """An input function's result (a path, a list of them or a dict of either) with each path
    spelled so that Snakemake takes it literally (:func:`layout.literal_input`).

    For the files of the node's own tree (below ``{node}``).

    Raises
    ------
    ConfigError
        A path has no such spelling.
    """
    if isinstance(files, dict):
        return {k: literal_files(v, node_dir) for k, v in files.items()}
    if isinstance(files, list):
        return [literal_files(f, node_dir) for f in files]
    spelled = literal_input(files, node_dir)
    if spelled is None:
        raise ConfigError(
            f"{files}: Snakemake would read part of this path as a wildcard and it cannot be reached from "
            f"{node_dir}; use a runs root without '{{name}}'"
        )
    return spelled


def declared(files) -> list[str]:
    """The files from outside the run (price files, a holdings file, a previous run's book) a rule
    declares as inputs: those whose paths Snakemake takes literally.

    A path with a wildcard-like part (such as ``{profile}``) stays out of Snakemake's inputs (a
    spelling through ``{node}/..`` would need the node's directory to exist before its job
    runs); the rule's content params (:meth:`Wiring.content`) still carry its bytes, so an edit
    reruns the rule all the same.
    """
    return [str(f) for f in files if not wildcard_like(f)]


def tune_gc_for_dag() -> tuple[int, int, int]:
    """Exempt what parsing built from the cycle collector and collect less often; return the old thresholds.

    A DAG of thousands of jobs allocates millions of objects that live until the run ends;
    the default collector rescans them on every 700 allocations (docs/performance.md). The
    runner restores its caller's thresholds when the run ends.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return old


# ------------------------------------------------------------------ the rules' named inputs
# Each returns what one rule's ``input:`` declares, named as its stage reads it (plain path
# strings; one file per risk profile, in the plan's order, where a name holds a list).


def step_inputs(run: RunContext, name: str, node_path: str, profile: str | None = None) -> dict[str, str | list[str]]:
    """Rule ``name``'s inputs from the run's own tree, as its step's entry names them (:mod:`steps`):
    the node's files (:class:`steps.Own`) and each child's (:class:`steps.Children`, named
    ``<input>:<sleeve id>``). Files from outside the run (:class:`steps.Outside`) are the wiring's."""
    node, profiles = run.node(node_path), run.plan.risk_profiles

    def files(n, artifact: str, per: str | None):
        if per == "profiles":
            return [str(n.file(artifact, profile=p)) for p in profiles]
        return str(n.file(artifact, profile=profile) if per == "profile" else n.file(artifact))

    out: dict[str, str | list[str]] = {}
    for key, spec in steps.step(name).inputs.items():
        if isinstance(spec, steps.Own):
            if spec.when != "book" or (node_path == ROOT and (run.previous_run or run.holdings)):
                out[key] = files(node, spec.artifact, spec.per)
        elif isinstance(spec, steps.Children):
            if spec.when == "limits" and not run.spec(node_path).config["meta_allocation"].get("book"):
                continue
            for c in run.spec(node_path).children:
                child = run.spec(c)
                artifact = spec.meta if child.is_meta else spec.atomic
                if artifact:
                    out[stages.child_input(key, child.sleeve_id)] = files(run.node(c), artifact, spec.per)
    return out


def atomic_below(run: RunContext, node_path: str) -> list:
    """The atomic nodes below meta node ``node_path``, at any depth, in plan order (their specs); external sleeves included."""
    out, todo = [], list(reversed(run.spec(node_path).children))
    while todo:
        spec = run.spec(todo.pop())
        if spec.is_meta:
            todo.extend(reversed(spec.children))
        else:
            out.append(spec)
    return out


def risk_prices(run: RunContext, node_path: str) -> list[str]:
    """The price files the risk job of ``node_path`` may read: those of every atomic sleeve below it,
    pinned ones included (a position's prices come from the sleeve that holds it), and the returns
    file of every external sleeve below it."""
    files: dict[str, None] = {}
    for spec in atomic_below(run, node_path):
        if spec.kind == "external":  # its positions' returns are its stream (the risk stage reads the file)
            from .external import external_files

            files[str(external_files(spec.config, run.plan.risk_profiles, run.base_dir)["returns"])] = None
            continue
        data, symbols = spec.config["data"], spec.config["universe"].get("symbols")
        files.update(dict.fromkeys(str(f) for f in deps.price_files(data, symbols, run.base_dir)))
    return list(files)


def pin_inputs(run: RunContext, node_path: str) -> dict[str, str | list[str]]:
    """Rule pinned_sleeve: the checked source's files the pin copies (``returns``, ``health``,
    ``sign_test``, ``weights``), and its ``provenance`` and run's ``resolved`` manifest if present."""
    spec = run.spec(node_path)
    src = stages.pin_source(run, node_path)
    files: dict[str, str | list[str]] = {k: str(src.file(k)) for k in stages.PIN_REQUIRED}
    files["weights"] = [str(src.file("weights", profile=p)) for p in run.plan.risk_profiles]
    optional = {"provenance": src.file("provenance"), "resolved": run_node(spec.pin, run.runs_root).file("resolved")}
    files.update({k: str(f) for k, f in optional.items() if f.is_file()})
    return files


def final_targets(run: RunContext) -> list[Path]:
    """Every final artifact of ``run``: what rule ``all`` (or the runner, see
    :meth:`Wiring.final_targets`) asks Snakemake for."""
    plan, root, profiles = run.plan, run.root, run.plan.risk_profiles
    targets = [root.file("resolved"), root.file("returns")]
    if plan.root.is_meta:
        targets += [root.file("flattened", profile=p) for p in profiles]
        for meta in plan.meta_nodes():  # every level is a run directory of its own, with its report
            node = run.node(meta.path)
            for name in steps.meta_targets():  # the steps' final artifacts at every meta node
                per = "{profile}" in NODE_FILES[name]
                targets += [node.file(name, profile=p) for p in profiles] if per else [node.file(name)]
        if run.previous_run or run.holdings:
            targets += [root.file("rebalance", profile=p) for p in profiles]
            if plan.trading:  # issue 24: the orders of the traded book
                targets += [root.file("orders", profile=p) for p in profiles]
    else:
        targets += [root.file(k) for k in ("health", "sign_test", "provenance")]
        targets += [root.file("weights", profile=p) for p in profiles]
    return targets


def check_plain_runs_root(run: RunContext) -> None:
    """Refuse a run directory with a wildcard-like part (``{name}``) for the plain ``snakemake`` command.

    Snakemake formats the paths of rule ``all`` and has no escape for braces; the runner (the
    scripts, ``make``, the Python API) names the final artifacts as Snakemake's targets instead,
    so only the run's owner of the plain command calls this.

    Raises
    ------
    ConfigError
        The plain ``snakemake`` command with such a runs root.
    """
    if wildcard_like(run.run_dir):
        raise ConfigError(
            f"runs_root {run.runs_root}: Snakemake would read part of it as a wildcard in the targets of rule "
            "all; run it with scripts/run_meta_pipeline.py, make or the Python API (which name the targets "
            "literally), or use a runs root without '{name}'"
        )
