"""Limits on a meta node's flattened book (``meta_allocation.book``) as linear constraints on its sleeve weights.

A meta node's book is linear in its sleeve weights: ``book = H^T m``, with ``H`` of shape
(n_sleeves, n_symbols) the children's net weight per symbol in force and ``m`` the sleeve
weights. Every limit is therefore a set of rows of ``A m <= b``:

* ``max_position`` (cap ``c_j`` on ``|book_j|``): ``H_j . m <= c_j`` and ``-H_j . m <= c_j``;
* ``group_max`` / ``group_min`` on a group's net weight ``sum_{j in g} book_j``;
* ``net_max`` / ``net_min`` on ``sum_j book_j``;
* ``gross_max`` on ``sum_j |book_j|``: a symbol every sleeve holds on one side contributes
  ``s_j H_j . m`` (its sign ``s_j``, since ``m >= 0``); the symbols held on both sides by
  different sleeves (``k`` of them, at most :data:`MAX_NETTED`) contribute one row per sign
  pattern, ``2^k`` rows in all: the exact polyhedral form of the absolute values.

skfolio's convex optimizers take the rows as ``left_inequality`` / ``right_inequality``;
every allocation, theirs included, then goes through :func:`projection.project`, the Euclidean
projection onto {m : sum m = 1, lo <= m <= hi, A m <= b} (a QP solved by Clarabel, then
solved exactly on its active set), which moves a feasible allocation by nothing and an
allocator's that ignores the rows (HRP, equal weight, inverse volatility) to the nearest
allocation that meets them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, OptimizationError
from .projection import LIMIT_TOL, Constraints, project

__all__ = [
    "LIMIT_TOL",
    "BookLimits",
    "Constraints",
    "book_limits",
    "constraints",
    "fit_limited",
    "project",
]

#: Most symbols held on both sides a ``gross_max`` is written for (``2^k`` rows).
MAX_NETTED = 10


@dataclass(frozen=True)
class BookLimits:
    """The limits of one meta node's book, resolved (``groups`` read from its CSV when given as a path).

    ``max_position``: symbol -> cap on |net weight| (``"*"``: every other symbol), or None.
    ``groups``: symbol -> group; ``group_max`` / ``group_min``: group -> bound on the group's
    net weight; ``gross_max``, ``net_min``, ``net_max``: bounds on the whole book, or None.
    """

    max_position: Mapping[str, float] | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    group_max: Mapping[str, float] = field(default_factory=dict)
    group_min: Mapping[str, float] = field(default_factory=dict)
    gross_max: float | None = None
    net_min: float | None = None
    net_max: float | None = None

    def cap(self, symbol: str) -> float | None:
        """The cap on ``symbol``'s |net weight| (None: uncapped)."""
        if self.max_position is None:
            return None
        return self.max_position.get(symbol, self.max_position.get("*"))

    def to_dict(self) -> dict:
        """The limits as configured, less the group map (JSON)."""
        out = {"max_position": dict(self.max_position) if self.max_position is not None else None,
               "group_max": dict(self.group_max), "group_min": dict(self.group_min),
               "gross_max": self.gross_max, "net_min": self.net_min, "net_max": self.net_max}  # fmt: skip
        return {k: v for k, v in out.items() if v not in (None, {})}


def _cap_map(value) -> dict[str, float]:
    """A number, or symbol -> number with ``"*"`` as the default, as symbol -> number."""
    return {"*": float(value)} if isinstance(value, (int, float)) else {str(k): float(v) for k, v in value.items()}


def read_groups(path: str | Path, where: str, base_dir: str | Path = ".") -> dict[str, str]:
    """Symbol -> group of a CSV ``symbol,group`` (a header row of those names, one symbol a row).

    Raises
    ------
    ConfigError
        The file is missing, lacks the two columns, or gives a symbol twice (naming the line).
    """
    file = Path(path) if Path(path).is_absolute() else Path(base_dir) / path
    if not file.is_file():
        raise ConfigError(f"{where}: groups file {str(path)!r} not found (a CSV with columns symbol,group)")
    out: dict[str, str] = {}
    with file.open(newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        if not {"symbol", "group"} <= set(reader.fieldnames or ()):
            raise ConfigError(f"{where}: groups file {str(path)!r} needs columns symbol,group (has {reader.fieldnames})")
        for i, row in enumerate(reader, start=2):
            sym, grp = (row["symbol"] or "").strip(), (row["group"] or "").strip()
            if not sym or not grp:
                raise ConfigError(f"{where}: groups file {str(path)!r} row {i}: empty symbol or group")
            if sym in out:
                raise ConfigError(f"{where}: groups file {str(path)!r} row {i}: symbol {sym!r} given twice")
            out[sym] = grp
    return out


def book_limits(
    book: Mapping | None, where: str, *, symbols: Sequence[str] | None = None, both_sides: bool = True,
    base_dir: str | Path = ".",
) -> BookLimits | None:
    """Resolve and check a ``meta_allocation.book`` block; refuse what the config alone shows infeasible.

    Parameters
    ----------
    book : dict or None
        The block (None or empty: no limits).
    where : str
        The profile, to name it in errors.
    symbols : list of str, optional
        Every symbol the node's book can hold, when its sleeves' universes say so.
    both_sides : bool
        A symbol may be held LONG by one sleeve and SHORT by another (then the net book's
        gross and net weights are not fixed at 1).

    Raises
    ------
    ConfigError
        One line naming the limit: a bound out of order, a group bound on a group the map
        does not name, a cap on a symbol no sleeve holds, or limits no book can meet.
    """
    if not book:
        return None
    where = f"{where}: meta_allocation.book"
    groups = book.get("groups", {})
    if isinstance(groups, str):
        groups = read_groups(groups, where, base_dir)
    limits = BookLimits(
        max_position=_cap_map(book["max_position"]) if "max_position" in book else None,
        groups={str(k): str(v) for k, v in groups.items()},
        group_max={str(k): float(v) for k, v in book.get("group_max", {}).items()},
        group_min={str(k): float(v) for k, v in book.get("group_min", {}).items()},
        gross_max=book.get("gross_max"),
        net_min=book.get("net_min"),
        net_max=book.get("net_max"),
    )
    known = sorted(set(limits.groups.values()))
    for key in ("group_max", "group_min"):
        for g in getattr(limits, key):
            if g not in known:
                raise ConfigError(f"{where}.{key}: group {g!r} is in no symbol's group; groups: {', '.join(known) or 'none'}")
    for g in set(limits.group_max) & set(limits.group_min):
        if limits.group_min[g] > limits.group_max[g]:
            raise ConfigError(f"{where}: group {g!r} has group_min {limits.group_min[g]} > group_max {limits.group_max[g]}")
    if limits.net_min is not None and limits.net_max is not None and limits.net_min > limits.net_max:
        raise ConfigError(f"{where}: net_min {limits.net_min} > net_max {limits.net_max}")
    if symbols is not None:
        universe = sorted(set(symbols))
        if limits.max_position is not None:
            stray = [s for s in limits.max_position if s != "*" and s not in universe]
            if stray:
                raise ConfigError(f"{where}.max_position: symbol {stray[0]!r} is held by no sleeve; symbols: {', '.join(universe)}")
            capped = [limits.cap(s) for s in universe]
            if None not in capped and not both_sides and sum(capped) < 1 - LIMIT_TOL:
                raise ConfigError(
                    f"{where}.max_position: infeasible: the caps of the {len(universe)} symbols the sleeves hold "
                    f"sum to {sum(capped):g} < 1, so no fully invested book meets them; raise max_position to >= {1 / len(universe):.4g}"
                )
        if not both_sides:  # a long-only book (or short-only) has net = +-1 and gross = 1 whatever the weights
            if limits.gross_max is not None and limits.gross_max < 1 - LIMIT_TOL:
                raise ConfigError(f"{where}.gross_max: infeasible: {limits.gross_max} < 1, the gross weight of a book no symbol of which is netted")
            grouped = all(s in limits.groups for s in universe)
            if grouped and set(limits.group_max) >= set(limits.groups[s] for s in universe):
                total = sum(limits.group_max[g] for g in {limits.groups[s] for s in universe})
                if total < 1 - LIMIT_TOL:
                    raise ConfigError(f"{where}.group_max: infeasible: the groups' maxima sum to {total:g} < 1 and every symbol is in one")
            mins = sum(limits.group_min.values())
            if mins > 1 + LIMIT_TOL:
                raise ConfigError(f"{where}.group_min: infeasible: the groups' minima sum to {mins:g} > 1")
    return limits


def constraints(limits: BookLimits, H: np.ndarray, symbols: Sequence[str]) -> Constraints:
    """The rows of ``A m <= b`` that hold ``H^T m`` within ``limits`` (see the module docstring).

    Rows no allocation on the simplex can violate (a cap above every sleeve's holding) are left out.

    Raises
    ------
    OptimizationError
        ``gross_max`` with more than :data:`MAX_NETTED` symbols held on both sides.
    """
    rows, bounds, labels = [], [], []

    def add(row, bound, label):
        rows.append(row)
        bounds.append(bound)
        labels.append(label)

    for j, sym in enumerate(symbols):
        cap = limits.cap(sym)
        if cap is not None and np.abs(H[:, j]).max(initial=0.0) > cap:
            add(H[:, j], cap, ("max_position", sym))
            add(-H[:, j], cap, ("max_position", sym))
    for g in sorted(set(limits.group_max) | set(limits.group_min)):
        member = np.array([limits.groups.get(s) == g for s in symbols], dtype=bool)
        G = H[:, member].sum(axis=1)
        if g in limits.group_max:
            add(G, limits.group_max[g], ("group_max", g))
        if g in limits.group_min:
            add(-G, -limits.group_min[g], ("group_min", g))
    N = H.sum(axis=1)
    if limits.net_max is not None:
        add(N, limits.net_max, ("net_max", "book"))
    if limits.net_min is not None:
        add(-N, -limits.net_min, ("net_min", "book"))
    if limits.gross_max is not None:
        pos, neg = (H > 0).any(axis=0), (H < 0).any(axis=0)
        netted = np.flatnonzero(pos & neg)
        if len(netted) > MAX_NETTED:
            raise OptimizationError(
                f"gross_max: {len(netted)} symbols are held on both sides by different sleeves, more than the "
                f"{MAX_NETTED} its exact linear form is written for"
            )
        one_side = np.abs(H[:, ~(pos & neg)]).sum(axis=1)
        for pattern in range(2 ** len(netted)):
            signs = np.array([1.0 if pattern >> k & 1 else -1.0 for k in range(len(netted))])
            add(one_side + H[:, netted] @ signs, limits.gross_max, ("gross_max", "book"))
    n = H.shape[0]
    return Constraints(np.array(rows, dtype=float).reshape(len(rows), n), np.array(bounds, dtype=float), labels)


def fit_limited(x, engine, cons: Constraints, *, prior=None, profile: str | None = None, estimator: dict | None = None):
    """One window's allocation within book limits: the optimizer's weights, projected (:func:`project`).

    A profile whose skfolio optimizer takes linear constraints (``engines.CONSTRAINED``, or an
    estimator whose class has ``left_inequality``) is fitted with the limits' rows (after any
    rows of its own); any other allocator is fitted as without limits. ``profile`` given: the
    live allocation, fitted by the skfolio estimator itself (its model is returned).

    Returns
    -------
    weights : ndarray of shape (n_sleeves,)
    distance : float
        How far the projection moved the optimizer's weights.
    model : fitted estimator or None

    Raises
    ------
    OptimizationError
        No allocation meets the limits, or the optimizer's weights are unusable; or whatever
        the optimizer raises.
    """
    from .engines import CONSTRAINED, EstimatorEngine, make_optimizer

    lo, hi = engine.min_weight, engine.max_weight
    ineq = {"left_inequality": cons.A, "right_inequality": cons.b} if len(cons.b) else {}
    model = None
    if isinstance(engine, EstimatorEngine):
        model = engine.model()
        params = model.get_params(deep=False)
        if ineq and "left_inequality" in params:
            own_a, own_b = params.get("left_inequality"), params.get("right_inequality")
            if own_a is not None and own_b is not None:
                ineq = {"left_inequality": np.vstack([np.asarray(own_a, dtype=float), cons.A]),
                        "right_inequality": np.concatenate([np.asarray(own_b, dtype=float), cons.b])}  # fmt: skip
            model.set_params(**ineq)
    elif (ineq and engine.profile in CONSTRAINED) or profile is not None:
        model = make_optimizer(engine.profile, min_weight=lo, max_weight=hi, **(ineq if engine.profile in CONSTRAINED else {}))
    if model is not None:
        w = np.asarray(model.fit(x).weights_, dtype=float)
    else:
        w = np.asarray(engine.fit(x, prior), dtype=float)
    if w.shape != (x.shape[1],) or not np.isfinite(w).all() or abs(w.sum() - 1) > 1e-6:
        raise OptimizationError(f"optimizer {engine.profile} returned invalid weights (sum {w.sum():.6g})")
    m, distance = project(w, lo, hi, cons)
    return m, distance, model
