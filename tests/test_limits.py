"""Book limits on a meta node (``meta_allocation.book``): held in every window and live, equal to skfolio's
own optimizers under the same constraints, projections optimal, refusals in one line.

One real run of a small limited profile (``meta_lim``: three sleeves, a name cap, a group cap
and a group floor) is shared by the module's ``e2e`` tests; the windows' books are rebuilt
here from the artifacts alone (the sleeves' recorded windows, the meta windows), independently
of ``limits.py``. The projection and the refusals are fast unit tests.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tradingview_scraper.errors import ConfigError, LimitsError, MetaError
from tradingview_scraper.layout import read_parquet
from tradingview_scraper.limits import BookLimits, constraints, project

from .conftest import SMALL_MANIFEST

PROFILES = ("equal_weight", "min_variance", "hrp", "risk_parity")
GROUPS = {"AAPL": "tech", "MSFT": "tech", "AMD": "tech", "KO": "staples", "PEP": "staples", "PG": "staples"}
BOOK = {"max_position": 0.35, "groups": GROUPS, "group_max": {"tech": 0.25}, "group_min": {"staples": 0.3}}
LO, HI = 0.1, 0.6


def limited_manifest(book: dict | None = None) -> dict:
    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["meta_lim"] = {
        "sleeves": [{"id": s, "profile": s} for s in ("tech", "staples", "factors")],
        "meta_allocation": {"min_weight": LO, "max_weight": HI, "book": BOOK if book is None else book},
    }
    return m


@pytest.fixture(scope="module")
def lim_run(tmp_path_factory):
    """One real run of ``meta_lim`` (in-process, no Ray): its run directory."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    base = tmp_path_factory.mktemp("limits")
    manifest = base / "manifest.json"
    manifest.write_text(json.dumps(limited_manifest()))
    MetaPipeline("meta_lim", manifest=manifest, run_id="lim", runs_root=base / "runs", ray=False).execute()
    return base / "runs" / "lim"


def _violations(book: pd.Series) -> dict[str, float]:
    """How far a net book (symbol -> net weight) breaks each limit of ``BOOK`` (<= 0: held)."""
    out = {f"max_position {s}": abs(v) - BOOK["max_position"] for s, v in book.items()}
    group = book.groupby(lambda s: GROUPS.get(s, "-")).sum()
    out["group_max tech"] = group.get("tech", 0.0) - 0.25
    out["group_min staples"] = 0.3 - group.get("staples", 0.0)
    return out


def _sleeve_windows(run, profile):
    """sleeve id -> DataFrame (window start x symbol) of net weights, from ``weights_<p>.json`` ``windows``."""
    out = {}
    for sid in ("tech", "staples", "factors"):
        rec = json.loads((run / "sleeves" / sid / f"weights_{profile}.json").read_text())
        sign = -1.0 if rec["direction"] == "SHORT" else 1.0
        w = rec["windows"]
        out[sid] = sign * pd.DataFrame(w["weights"], index=pd.DatetimeIndex(pd.to_datetime(w["start"])))
    return out


def _window_books(run, profile):
    """(meta window start, sleeve weights, holdings matrix) of every meta window, from the artifacts."""
    meta = json.loads((run / "meta" / f"weights_{profile}.json").read_text())
    sleeves = _sleeve_windows(run, profile)
    starts = pd.to_datetime(meta["windows"]["start"])
    for k, start in enumerate(starts):
        m = pd.Series({sid: meta["windows"]["weights"][sid][k] for sid in sleeves})
        held = pd.DataFrame({sid: frame[frame.index <= start].iloc[-1] for sid, frame in sleeves.items()}).T.fillna(0.0)
        yield start, m, held


@pytest.mark.e2e
@pytest.mark.parametrize("profile", PROFILES)
def test_every_window_and_the_live_book_hold_every_limit(lim_run, profile):
    meta = json.loads((lim_run / "meta" / f"weights_{profile}.json").read_text())
    infeasible = set(meta["book_limits"]["windows"]["infeasible"])
    n = 0
    for start, m, held in _window_books(lim_run, profile):
        assert str(start.date()) not in infeasible
        worst = max(_violations(held.T @ m[held.index]).values())
        assert worst <= 1e-9, (profile, start, worst)
        assert abs(m.sum() - 1) <= 1e-9 and m.min() >= LO - 1e-9 and m.max() <= HI + 1e-9
        n += 1
    assert n == len(meta["windows"]["start"]) > 10
    flat = json.loads((lim_run / f"flattened_{profile}.json").read_text())
    live = pd.Series({r["symbol"]: 0.0 for r in flat["weights"]})
    for r in flat["weights"]:
        live[r["symbol"]] += r["net_weight"]
    assert max(_violations(live).values()) <= 1e-9
    rec = flat["book_limits"]
    assert all(c["slack"] >= -1e-9 for c in rec["checks"])
    assert rec["groups"]["tech"]["max"] == 0.25 and abs(rec["groups"]["tech"]["net"] - live[["AAPL", "MSFT", "AMD"]].sum()) < 1e-12


@pytest.mark.e2e
def test_the_limits_bind_and_say_by_how_much(lim_run):
    """Equal weight puts a third in tech, above its 25% cap: projected to the cap, the excess reported."""
    rec = json.loads((lim_run / "flattened_equal_weight.json").read_text())["book_limits"]
    bind = {(b["limit"], b["key"]): b for b in rec["binding"]}
    assert abs(bind[("group_max", "tech")]["unconstrained"] - 1 / 3) < 1e-12
    assert abs(bind[("group_max", "tech")]["excess"] - (1 / 3 - 0.25)) < 1e-12
    assert rec["projection_distance"] > 0.05 and rec["windows"]["projected"] == rec["windows"]["fitted"]


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["min_variance", "risk_parity"])
def test_convex_meta_allocations_equal_skfolio_under_the_same_constraints(lim_run, profile):
    """Every window's sleeve weights equal skfolio's MeanRisk / RiskBudgeting fitted on that window's
    meta returns with the limits written here as ``left_inequality`` / ``right_inequality``."""
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, RiskBudgeting

    X = read_parquet(lim_run / "meta" / f"returns_{profile}.parquet")
    train = 126
    for start, m, held in _window_books(lim_run, profile):
        end = X.index.get_loc(start)
        window = X.iloc[end - train : end]
        H = held.loc[list(X.columns)].to_numpy()
        symbols = list(held.columns)
        rows, bounds = [], []
        for j in range(len(symbols)):
            # a cap above every sleeve's holding cannot bind on the simplex: the pipeline leaves
            # those rows out, and so does this problem (the same constraints, row for row)
            if np.abs(H[:, j]).max() > 0.35:
                rows += [H[:, j], -H[:, j]]
                bounds += [0.35, 0.35]
        tech = np.array([GROUPS.get(s) == "tech" for s in symbols])
        staples = np.array([GROUPS.get(s) == "staples" for s in symbols])
        # in the pipeline's order (groups sorted, a group's max before its min): Clarabel's
        # RiskBudgeting solution moves by a few 1e-6 with the order of the rows alone
        rows += [-H[:, staples].sum(axis=1), H[:, tech].sum(axis=1)]
        bounds += [-0.3, 0.25]
        kw = {"min_weights": LO, "max_weights": HI, "left_inequality": np.array(rows), "right_inequality": np.array(bounds)}
        if profile == "min_variance":
            model = MeanRisk(risk_measure=RiskMeasure.VARIANCE, **kw)
        else:
            model = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, **kw)
        expected = model.fit(window.to_numpy()).weights_
        np.testing.assert_allclose(m[list(X.columns)].to_numpy(), expected, atol=1e-6, err_msg=f"{profile} {start}")


@pytest.mark.e2e
def test_an_unlimited_profile_records_nothing_new(lim_run):
    """The sleeves record their windows only under a limited node; a plain node's records are as before."""
    from tradingview_scraper.manifest import resolve

    plan = resolve(json.loads(SMALL_MANIFEST.read_text()), "meta_small", manifest_path=str(SMALL_MANIFEST))
    assert all("record_windows" not in n.config for n in plan.atomic_nodes())
    assert all("book" not in n.config["meta_allocation"] for n in plan.meta_nodes())


@pytest.mark.e2e
def test_a_live_allocation_no_limit_allows_stops_the_node_in_one_line(lim_run):
    """With a 15% cap no allocation of these live books exists: a MetaError naming the node and the limit."""
    from tradingview_scraper.compose import allocate
    from tradingview_scraper.manifest import resolve

    m = limited_manifest({**BOOK, "max_position": 0.15})
    plan = resolve(m, "meta_lim", manifest_path=str(SMALL_MANIFEST))
    node = plan.root
    books = {s: json.loads((lim_run / "sleeves" / s / "weights_hrp.json").read_text()) for s in ("tech", "staples", "factors")}
    frame = read_parquet(lim_run / "meta" / "returns_hrp.parquet")
    with pytest.raises(MetaError, match=r"^meta profile 'meta_lim' \(hrp\): the live allocation: book limits infeasible: .* meets max_position$"):
        allocate(node, frame, "hrp", books)


# ----------------------------------------------------------------------------- refusals before any work


@pytest.mark.parametrize(
    ("book", "pattern"),
    [
        ({"max_position": 0.1}, r"meta_allocation\.book\.max_position: infeasible: the caps of the 9 symbols .* sum to 0\.9 < 1"),
        ({"groups": GROUPS, "group_max": {"energy": 0.2}}, r"meta_allocation\.book\.group_max: group 'energy' is in no symbol's group; groups: staples, tech"),
        ({"groups": GROUPS, "group_max": {"tech": 0.2}, "group_min": {"tech": 0.3}}, r"group 'tech' has group_min 0\.3 > group_max 0\.2"),
        ({"gross_max": 0.9}, r"meta_allocation\.book\.gross_max: infeasible: 0\.9 < 1"),
        ({"net_min": 0.5, "net_max": 0.4}, r"net_min 0\.5 > net_max 0\.4"),
        ({"max_position": {"TSLA": 0.1}}, r"max_position: symbol 'TSLA' is held by no sleeve"),
        ({"groups": "missing.csv"}, r"groups file 'missing\.csv' not found"),
    ],
)
def test_limits_the_config_shows_infeasible_are_refused_in_one_line(book, pattern, write_manifest, capfd, tmp_path):
    from tradingview_scraper.orchestration.cli import main

    path = write_manifest(limited_manifest(book))
    capfd.readouterr()
    code = main(["--profile", "meta_lim", "--manifest", str(path), "--runs-root", str(tmp_path / "runs"), "--no-ray"],
                prog="run_meta_pipeline.py", require_meta=True)  # fmt: skip
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_limits_on_a_node_with_a_nested_meta_sleeve_are_refused(write_manifest):
    from tradingview_scraper.manifest import resolve

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["meta_mid"]["meta_allocation"] = {"min_weight": 0.1, "max_weight": 0.9, "book": {"max_position": 0.5}}
    with pytest.raises(ConfigError, match=r"book on a meta profile with nested meta sleeve 'inner' is not supported"):
        resolve(m, "meta_mid", manifest_path="m.json")


# ----------------------------------------------------------------------------- the projection


@st.composite
def _problems(draw):
    n = draw(st.integers(2, 6))
    k = draw(st.integers(1, 8))
    H = np.array(draw(st.lists(st.lists(st.sampled_from([0.0, 1.0]) | st.floats(-0.3, 1.0), min_size=k, max_size=k), min_size=n, max_size=n)))
    H = np.abs(H) / np.abs(H).sum(axis=1, keepdims=True).clip(1e-9) if draw(st.booleans()) else H
    m0 = np.array(draw(st.lists(st.floats(-0.5, 1.5), min_size=n, max_size=n)))
    cap = draw(st.floats(0.05, 1.0))
    groups = {f"S{j}": f"g{j % 2}" for j in range(k)}
    limits = BookLimits(max_position={"*": cap}, groups=groups, group_max={"g0": draw(st.floats(0.0, 1.0))},
                        net_max=draw(st.just(1.0) | st.floats(0.2, 1.0)), gross_max=draw(st.just(1.0) | st.floats(0.5, 1.5)))  # fmt: skip
    return H, m0, limits, [f"S{j}" for j in range(k)]


def _polytope(m0, lo, hi, cons):
    """``G m <= h``: the limits' rows and the sleeve bounds."""
    n = len(m0)
    return np.vstack([cons.A, np.eye(n), -np.eye(n)]), np.concatenate([cons.b, np.full(n, hi), np.full(n, -lo)])


def _assert_optimal(m, m0, G, h):
    """``m`` is feasible to 1e-9 and optimal: ``m0 - m`` is a non-negative combination of the active rows'
    normals plus a multiple of the all-ones vector (KKT, checked by NNLS)."""
    from scipy.optimize import nnls

    n = len(m0)
    assert (G @ m - h).max() <= 1e-9 and abs(m.sum() - 1) <= 1e-9
    active = G[G @ m - h >= -1e-7]
    basis = np.vstack([active, np.ones(n), -np.ones(n)]).T
    _, residual = nnls(basis, m0 - m)
    assert residual <= 1e-6 * max(1.0, np.linalg.norm(m0 - m)), residual


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_projection_meets_its_optimality_conditions(problem):
    """A projected allocation is feasible and optimal (:func:`_assert_optimal`); or no allocation exists."""
    H, m0, limits, symbols = problem
    cons = constraints(limits, H, symbols)
    try:
        m, dist = project(m0, 0.0, 1.0, cons)
    except LimitsError:
        return
    _assert_optimal(m, m0, *_polytope(m0, 0.0, 1.0, cons))
    assert abs(dist - np.linalg.norm(m - m0)) < 1e-12


#: Five sleeves, four holding only S2 (group g0, capped at 0.5), one only S1, zero holdings: the gross and net
#: limits of 1 repeat ``sum m = 1`` (found by hypothesis).
REPEATED_SUM = (
    np.array([[0.0, 0.0, 1.0]] * 4 + [[0.0, 1.0, 0.0]]),
    np.zeros(5),
    BookLimits(max_position={"*": 1.0}, groups={"S0": "g0", "S1": "g1", "S2": "g0"}, group_max={"g0": 0.5},
               gross_max=1.0, net_max=1.0),  # fmt: skip
    ["S0", "S1", "S2"],
)


@settings(max_examples=60, deadline=None)
@given(_problems())
@example(REPEATED_SUM)
def test_the_least_distance_fallback_alone_meets_the_optimality_conditions(problem):
    """The exact method :func:`project` falls back on is the projection by itself (not only once polished on
    its active set) wherever it finds one. It may find none on a set without interior (a single point:
    its residual cannot be normalized), where the interior-point solution decides."""
    from tradingview_scraper.projection import _least_distance

    H, m0, limits, symbols = problem
    cons = constraints(limits, H, symbols)
    G, h = _polytope(m0, 0.0, 1.0, cons)
    m = _least_distance(m0, G, h)
    if m is not None:
        _assert_optimal(m, m0, G, h)


def test_a_projection_whose_active_rows_repeat_the_sum_is_optimal():
    """A long-only book's gross and net limits repeat ``sum m = 1``: the least-squares multipliers split
    and go negative, yet the active set is optimal (the old code returned a feasible point 0.58 from
    ``m0`` instead of the projection at 0.559)."""
    H, m0, limits, symbols = REPEATED_SUM
    cons = constraints(limits, H, symbols)
    m, dist = project(m0, 0.0, 1.0, cons)
    np.testing.assert_allclose(m, [0.125, 0.125, 0.125, 0.125, 0.5], atol=1e-12)
    assert abs(dist - np.sqrt(0.3125)) < 1e-12


def test_the_least_distance_fallback_is_the_projection_when_rows_repeat_the_sum():
    """Rows that repeat ``sum m = 1`` are constant on the plane and leave rounding residue as rows of the
    least-distance problem, each a half-space through its origin (the old code returned a feasible point
    0.58 from ``m0``, not the projection at 0.559)."""
    from tradingview_scraper.projection import _least_distance

    H, m0, limits, symbols = REPEATED_SUM
    cons = constraints(limits, H, symbols)
    m = _least_distance(m0, *_polytope(m0, 0.0, 1.0, cons))
    np.testing.assert_allclose(m, [0.125, 0.125, 0.125, 0.125, 0.5], atol=1e-12)


def test_a_feasible_allocation_is_not_moved():
    H = np.array([[0.5, 0.5], [0.2, 0.8]])
    cons = constraints(BookLimits(max_position={"*": 0.9}), H, ["A", "B"])
    m0 = np.array([0.5, 0.5])
    m, dist = project(m0, 0.0, 1.0, cons)
    assert dist == 0.0 and m is m0


def test_limits_on_a_node_with_a_pinned_sleeve_are_refused():
    from tradingview_scraper.manifest import resolve

    m = limited_manifest({"max_position": 0.5})
    m["profiles"]["meta_lim"]["sleeves"][0]["run_id"] = "tech-old"
    with pytest.raises(ConfigError, match=r"meta_allocation\.book with pinned sleeve 'tech': a pinned run records no per-window weights"):
        resolve(m, "meta_lim", manifest_path="m.json")


# ----------------------------------------------------------------------------- asset bounds inside a sleeve (item 1, scalar)


@pytest.mark.e2e
def test_asset_bounds_hold_in_every_sleeve_window_and_the_engine_equals_skfolio():
    """``allocation: {min_weight, max_weight}`` on an atomic profile bounds every window of every risk profile;
    each window's weights equal skfolio's estimator fitted with those bounds on that window (1e-6)."""
    from skfolio.model_selection import WalkForward

    from tradingview_scraper.data import prices_to_returns
    from tradingview_scraper.engines import make_optimizer
    from tradingview_scraper.manifest import resolve
    from tradingview_scraper.sleeve import compute_sleeve

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["energy"]["allocation"] = {"min_weight": 0.2, "max_weight": 0.4}
    plan = resolve(m, "energy", manifest_path=str(SMALL_MANIFEST))
    cfg = {**plan.root.config, "record_windows": True}
    assert cfg["allocation"] == {"min_weight": 0.2, "max_weight": 0.4}
    result = compute_sleeve(cfg, list(PROFILES) + ["inverse_volatility"], sleeve_id="energy", profile="energy")
    from tradingview_scraper.data import checked_prices

    prices, _ = checked_prices(cfg["data"], cfg["universe"]["symbols"])
    X = prices_to_returns(prices)
    splits = list(WalkForward(train_size=126, test_size=21, reduce_test=True).split(X.to_numpy()))
    for rp, rec in result.weights.items():
        w = pd.DataFrame(rec["windows"]["weights"])
        assert len(w) == len(splits)
        assert w.min().min() >= 0.2 - 1e-12 and w.max().max() <= 0.4 + 1e-12, rp
        assert all(0.2 - 1e-12 <= r["weight"] <= 0.4 + 1e-12 for r in rec["weights"]), rp
        if rp in ("min_variance", "risk_parity", "hrp"):
            for k, (train, _) in enumerate(splits):
                expected = make_optimizer(rp, min_weight=0.2, max_weight=0.4).fit(X.to_numpy()[train]).weights_
                np.testing.assert_allclose(w.iloc[k][list(X.columns)].to_numpy(), expected, atol=1e-6, err_msg=f"{rp} {k}")
    assert pd.DataFrame(result.weights["min_variance"]["windows"]["weights"]).max().max() > 0.4 - 1e-6  # the cap binds


@pytest.mark.parametrize(
    ("alloc", "pattern"),
    [
        ({"max_weight": 0.3}, r"profile 'energy': infeasible allocation\.max_weight: 3 assets x 0\.3 = 0\.9 < 1; use max_weight >= 0\.3333"),
        ({"min_weight": 0.4}, r"infeasible allocation\.min_weight: 3 assets x 0\.4 = 1\.2 > 1"),
        ({"min_weight": 0.3, "max_weight": 0.2}, r"allocation\.min_weight=0\.3 exceeds allocation\.max_weight=0\.2"),
        ({"max_weight": {"*": 0.4, "RRC": 0.1}}, r"infeasible allocation\.max_weight: the 3 smallest caps a window can hold sum to 0\.9 < 1"),
        ({"max_weight": {"TSLA": 0.5}}, r"allocation\.max_weight: symbol 'TSLA' is not in the universe \(CVX, XOM, RRC\)"),
        ({"min_weight": {"XOM": 0.6}, "max_weight": {"*": 0.5}}, r"symbol 'XOM' has min_weight 0\.6 > max_weight 0\.5"),
    ],
)
def test_infeasible_asset_bounds_are_refused_in_one_line(alloc, pattern):
    from tradingview_scraper.manifest import resolve

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["energy"]["allocation"] = alloc
    with pytest.raises(ConfigError, match=pattern):
        resolve(m, "energy", manifest_path=str(SMALL_MANIFEST))


@pytest.mark.e2e
def test_the_in_memory_api_allocates_a_limited_node_as_the_workflow_does(lim_run):
    from tradingview_scraper.api import run_plan

    res = run_plan("meta_lim", manifest=lim_run.parent.parent / "manifest.json", profiles=["hrp"])
    root = res.nodes["."].flattened["hrp"]
    stored = json.loads((lim_run / "flattened_hrp.json").read_text())
    assert root["sleeve_weights"] == stored["sleeve_weights"]
    assert root["book_limits"] == stored["book_limits"]


@pytest.mark.e2e
def test_per_symbol_asset_bounds_hold_and_equal_skfolio_or_the_exact_projection():
    """Bounds by symbol (``"*"`` the rest): skfolio's estimators take them as arrays (1e-6 to their own fit);
    equal weight is their exact projection (RRC capped at 10%, the rest share 90%)."""
    from skfolio.model_selection import WalkForward

    from tradingview_scraper.data import checked_prices, prices_to_returns
    from tradingview_scraper.engines import make_optimizer
    from tradingview_scraper.manifest import resolve
    from tradingview_scraper.sleeve import compute_sleeve

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["energy"]["allocation"] = {"min_weight": {"XOM": 0.3}, "max_weight": {"*": 0.5, "RRC": 0.1}}
    cfg = {**resolve(m, "energy", manifest_path=str(SMALL_MANIFEST)).root.config, "record_windows": True}
    result = compute_sleeve(cfg, ["equal_weight", "min_variance", "risk_parity", "hrp"], sleeve_id="energy", profile="energy")
    prices, _ = checked_prices(cfg["data"], cfg["universe"]["symbols"])
    X = prices_to_returns(prices)
    lo = np.array([0.3 if s == "XOM" else 0.0 for s in X.columns])
    hi = np.array([0.1 if s == "RRC" else 0.5 for s in X.columns])
    splits = list(WalkForward(train_size=126, test_size=21, reduce_test=True).split(X.to_numpy()))
    for rp, rec in result.weights.items():
        w = pd.DataFrame(rec["windows"]["weights"])[list(X.columns)]
        assert (w.to_numpy() >= lo - 1e-12).all() and (w.to_numpy() <= hi + 1e-12).all(), rp
        if rp == "equal_weight":
            np.testing.assert_allclose(w.to_numpy(), np.tile([0.45 if s != "RRC" else 0.1 for s in X.columns], (len(w), 1)), atol=1e-12)
            continue
        for k, (train, _) in enumerate(splits):
            expected = make_optimizer(rp, min_weight=lo, max_weight=hi).fit(X.iloc[train]).weights_
            np.testing.assert_allclose(w.iloc[k].to_numpy(), expected, atol=1e-6, err_msg=f"{rp} {k}")
