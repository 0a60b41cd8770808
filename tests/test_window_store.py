"""The walk-forward window store (issue 25, item 2): a history that only grew fits only its new windows.

Sleeves on a real price file (skfolio's S&P 500 prices written as a user's CSV table) grown by
a day: the result equals, byte for byte, a computation from scratch in an empty store, and the
windows fitted are exactly the windows the splitter adds. An edited old row, a corrupt store
file and another walk-forward's file reuse nothing. The meta walk-forward does the same, with
and without book limits. One small workflow run on file sources closes the loop (``e2e``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tradingview_scraper.layout import write_json, write_parquet
from tradingview_scraper.window_store import WindowStore

from .conftest import SMALL_MANIFEST

SYMBOLS = ["AAPL", "MSFT", "AMD", "KO"]
PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]
TRAIN, TEST = 126, 21


@pytest.fixture(scope="module")
def sp500():
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset().loc["2019-01-01":, SYMBOLS]


def _config(path: Path) -> dict:
    """The resolved atomic profile of a sleeve reading the CSV table ``path``."""
    from tradingview_scraper.manifest import resolve

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["tech"] = {"data": {"source": "table", "path": str(path)}, "universe": {"symbols": SYMBOLS}}
    return resolve(m, "tech", manifest_path=str(SMALL_MANIFEST)).root.config


def _write(prices, rows: int, path: Path) -> None:
    prices.iloc[:rows].to_csv(path)


def _splits(n_returns: int) -> set[tuple[int, int]]:
    """The walk-forward's windows on ``n_returns`` rows, as (first train row, train rows)."""
    from skfolio.model_selection import WalkForward

    splitter = WalkForward(train_size=TRAIN, test_size=TEST, reduce_test=True)
    return {(int(train[0]), len(train)) for train, _ in splitter.split(np.zeros((n_returns, 1)))}


def _artifacts(result, where: Path) -> dict[str, bytes]:
    """The bytes of a sleeve's shared artifacts, written as the sleeve stage writes them."""
    where.mkdir(parents=True)
    write_parquet(where / "returns.parquet", result.returns)
    for rp, record in result.weights.items():
        write_json(where / f"weights_{rp}.json", record)
    write_json(where / "health.json", result.health)
    write_json(where / "sign_test.json", result.sign_test)
    return {p.name: p.read_bytes() for p in sorted(where.iterdir())}


def _sleeve(cfg: dict, store: WindowStore | None, profiles=PROFILES):
    from tradingview_scraper.sleeve import compute_sleeve

    return compute_sleeve(cfg, list(profiles), sleeve_id="tech", profile="tech", windows=store)


def test_a_day_appended_fits_only_the_new_windows_and_equals_a_computation_from_scratch(sp500, tmp_path):
    file = tmp_path / "prices.csv"
    cfg, store = _config(file), WindowStore.at(tmp_path / "store")
    base = TRAIN + 12 * TEST + 1  # price rows; one more opens a window, the next only lengthens it
    _write(sp500, base, file)
    first = _sleeve(cfg, store)
    assert first.windows == {rp: {"fitted": len(_splits(base - 1)), "reused": 0, "store": "new"} for rp in PROFILES}
    opened = []
    for rows in (base + 1, base + 2):
        _write(sp500, rows, file)
        windows, before = _splits(rows - 1), _splits(rows - 2)
        new = windows - before
        grown = _sleeve(cfg, store)
        scratch = _sleeve(cfg, WindowStore.at(tmp_path / f"empty-{rows}"))
        assert grown.windows == {rp: {"fitted": len(new), "reused": len(windows) - len(new), "store": "grown"} for rp in PROFILES}
        assert scratch.windows == {rp: {"fitted": len(windows), "reused": 0, "store": "new"} for rp in PROFILES}
        assert _artifacts(grown, tmp_path / f"grown-{rows}") == _artifacts(scratch, tmp_path / f"scratch-{rows}")
        last = sp500.index[rows - 1].date().isoformat()
        assert all(rec["fitted_on"]["end"] == last for rec in grown.weights.values())  # the live fit saw the new day
        opened.append(len(new))
    assert opened == [1, 0]


def test_an_edited_old_row_fits_every_window_again(sp500, tmp_path):
    """An old price changed under an unchanged mtime: the content decides, nothing is reused."""
    file = tmp_path / "prices.csv"
    cfg, store = _config(file), WindowStore.at(tmp_path / "store")
    rows = TRAIN + 6 * TEST + 5
    _write(sp500, rows, file)
    _sleeve(cfg, store, ["min_variance"])
    stat = file.stat()
    edited = sp500.iloc[:rows].copy()
    edited.iloc[40, 1] *= 1.0001
    edited.to_csv(file)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = _sleeve(cfg, store, ["min_variance"])
    n = len(_splits(rows - 1))
    assert again.windows == {"min_variance": {"fitted": n, "reused": 0, "store": "changed"}}
    assert _artifacts(again, tmp_path / "again") == _artifacts(_sleeve(cfg, None, ["min_variance"]), tmp_path / "scratch")


def _rechecksummed(doc: dict) -> bytes:
    body = json.dumps(doc, sort_keys=True).encode()
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _tampered(raw: bytes, case: str, other: bytes) -> bytes:
    head, _, body = raw.partition(b"\n")
    if case == "truncated":
        return raw[: len(raw) // 2]
    if case == "empty":
        return b""
    if case == "flipped":  # one weight's bytes changed, the checksum left as it was
        doc = json.loads(body)
        doc["windows"][0]["weights"] = doc["windows"][1]["weights"]
        return head + b"\n" + json.dumps(doc, sort_keys=True).encode()
    if case == "short_weights":  # a consistent checksum over weights of the wrong length
        doc = json.loads(body)
        doc["windows"][0]["weights"] = doc["windows"][0]["weights"][:8]
        return _rechecksummed(doc)
    return other  # another walk-forward's valid file under this one's name


@pytest.mark.parametrize("case", ["truncated", "empty", "flipped", "short_weights", "other"])
def test_a_corrupt_store_file_is_ignored_with_a_log_line_and_rewritten(sp500, tmp_path, caplog, case):
    file = tmp_path / "prices.csv"
    cfg, store = _config(file), WindowStore.at(tmp_path / "store")
    rows = TRAIN + 5 * TEST + 3
    _write(sp500, rows, file)
    first = _sleeve(cfg, store, ["min_variance", "hrp"])
    files = sorted((tmp_path / "store").iterdir())
    assert len(files) == 2  # one per walk-forward identity
    target, other = files
    target.write_bytes(_tampered(target.read_bytes(), case, other.read_bytes()))
    n = len(_splits(rows - 1))
    with caplog.at_level(logging.WARNING, logger="tradingview_scraper"):
        again = _sleeve(cfg, store, ["min_variance", "hrp"])
    status = {rp: c["store"] for rp, c in again.windows.items()}
    hit = [rp for rp, s in status.items() if s != "grown"]
    assert len(hit) == 1 and again.windows[hit[0]]["fitted"] == n and again.windows[hit[0]]["reused"] == 0
    if case == "other":
        assert status[hit[0]] == "other" and not caplog.records
    else:
        assert status[hit[0]].startswith("unreadable: ")
        (line,) = [r.getMessage() for r in caplog.records]
        assert str(target) in line and "ignored, its windows are fitted again" in line
    assert _artifacts(again, tmp_path / "again") == _artifacts(first, tmp_path / "first")
    third = _sleeve(cfg, store, ["min_variance", "hrp"])  # the rewritten file serves every window
    assert all(c == {"fitted": 0, "reused": n, "store": "grown"} for c in third.windows.values())


def test_the_sleeve_stage_uses_the_runs_roots_store_unless_reuse_is_off(tmp_path):
    """``reuse: false``: no store read or written. On: a second run id reuses every window (the
    same history), its shared artifacts keep their bytes, and provenance says how many."""
    from tradingview_scraper import stages, steps
    from tradingview_scraper.manifest import load_plan
    from tradingview_scraper.run import RunContext

    from .helpers import sleeve_outputs

    plan = load_plan("tech", SMALL_MANIFEST, ["equal_weight", "min_variance"])
    root = tmp_path / "runs"
    n = len(_splits(len(_plan_returns(plan))))
    seen = {}
    for run_id, reuse in (("off", False), ("first", True), ("second", True)):
        ctx = RunContext(plan=plan, run_id=run_id, runs_root=root, reuse=reuse)
        stages.run_step(steps.step("sleeve"), ctx, ".", output=sleeve_outputs(ctx))
        if not reuse:
            assert not (root / ".store").exists()
        tasks = json.loads((ctx.run_dir / "provenance.json").read_text())["tasks"]
        seen[run_id] = {rp: t["windows"] for rp, t in tasks.items()}
        shared = ("returns.parquet", "health.json", "sign_test.json", "weights_min_variance.json")
        assert run_id == "off" or all((ctx.run_dir / f).read_bytes() == (root / "off" / f).read_bytes() for f in shared)
    assert seen["off"]["min_variance"] == {"fitted": n, "reused": 0, "store": None}
    assert seen["first"]["min_variance"] == {"fitted": n, "reused": 0, "store": "new"}
    assert seen["second"] == {rp: {"fitted": 0, "reused": n, "store": "grown"} for rp in ("equal_weight", "min_variance")}


def _plan_returns(plan):
    from tradingview_scraper.data import checked_prices, prices_to_returns

    cfg = plan.root.config
    return prices_to_returns(checked_prices(cfg["data"], cfg["universe"]["symbols"])[0])


# ----------------------------------------------------------------------------- the meta walk-forward


@pytest.fixture(scope="module")
def sleeve_books():
    """The three sleeves of ``meta_small`` (real data), their streams and books (per-window weights recorded)."""
    from tradingview_scraper.manifest import resolve
    from tradingview_scraper.sleeve import compute_sleeve

    plan = resolve(json.loads(SMALL_MANIFEST.read_text()), "meta_small", manifest_path=str(SMALL_MANIFEST))
    out = {}
    for spec in plan.atomic_nodes():
        cfg = {**spec.config, "record_windows": True}
        out[spec.sleeve_id] = compute_sleeve(cfg, ["min_variance", "hrp"], sleeve_id=spec.sleeve_id, profile=spec.profile)
    return plan, out


@pytest.mark.parametrize("limited", [False, True], ids=["bounds", "book_limits"])
@pytest.mark.parametrize("profile", ["min_variance", "hrp"])
def test_the_meta_walk_forward_fits_only_its_new_windows(sleeve_books, tmp_path, profile, limited):
    """Meta returns grown by a common date: the new window is fitted (under book limits: with the
    constraints of the books in force), the rest reused; record, stream and tree equal a fit from scratch."""
    from tradingview_scraper.limits import book_limits
    from tradingview_scraper.meta import aligned_returns, meta_optimize
    from tradingview_scraper.window_store import WindowStore

    plan, sleeves = sleeve_books
    frame, _ = aligned_returns({sid: r.returns[profile] for sid, r in sleeves.items()}, min_obs=TRAIN + TEST)
    groups = {"AAPL": "tech", "MSFT": "tech", "AMD": "tech", "KO": "staples", "PEP": "staples", "PG": "staples"}
    limits = book_limits({"max_position": 0.35, "groups": groups, "group_max": {"tech": 0.25}}, "meta_small") if limited else None
    books = {sid: r.weights[profile] for sid, r in sleeves.items()} if limited else None
    kw = dict(min_weight=0.1, max_weight=0.6, train_window=TRAIN, test_window=TEST, limits=limits, books=books)
    rows = max(n for n in range(len(frame)) if (n - TRAIN) % TEST == 0)  # the next common date opens a window
    store = WindowStore.at(tmp_path / "store")
    meta_optimize(frame.iloc[:rows], profile, store=store, **kw)
    fits: dict = {}
    grown = meta_optimize(frame.iloc[: rows + 1], profile, store=store, fits=fits, **kw)
    scratch = meta_optimize(frame.iloc[: rows + 1], profile, **kw)
    windows = _splits(rows)
    assert fits == {"fitted": 1, "reused": len(windows), "store": "grown"}
    assert json.dumps(grown[0]) == json.dumps(scratch[0]) and json.dumps(grown[2]) == json.dumps(scratch[2])
    assert grown[1].to_numpy().tobytes() == scratch[1].to_numpy().tobytes() and grown[1].index.equals(scratch[1].index)
    if limited:
        assert grown[0]["book_limits"]["windows"]["projection_distance"]  # the limits were in force


def test_a_meta_window_under_changed_book_limit_rows_is_fitted_again(sleeve_books, tmp_path):
    """The same meta returns, but a child's recorded holdings changed from some window on: the meta
    windows whose constraints changed are fitted again, the others reused; the result is a fit from scratch."""
    import copy

    from tradingview_scraper.limits import book_limits
    from tradingview_scraper.meta import aligned_returns, meta_optimize
    from tradingview_scraper.window_store import WindowStore

    _, sleeves = sleeve_books
    frame, _ = aligned_returns({sid: r.returns["min_variance"] for sid, r in sleeves.items()}, min_obs=TRAIN + TEST)
    limits = book_limits({"max_position": 0.3}, "meta_small")
    books = {sid: r.weights["min_variance"] for sid, r in sleeves.items()}
    kw = dict(min_weight=0.1, max_weight=0.6, train_window=TRAIN, test_window=TEST, limits=limits)
    store = WindowStore.at(tmp_path / "store")
    meta_optimize(frame, "min_variance", store=store, books=books, **kw)
    changed = copy.deepcopy(books)
    held = changed["tech"]["windows"]["weights"]
    half = len(held["AAPL"]) // 2
    held["AAPL"][half:], held["MSFT"][half:] = held["MSFT"][half:], held["AAPL"][half:]  # the tech sleeve's later books
    fits: dict = {}
    again = meta_optimize(frame, "min_variance", store=store, books=changed, fits=fits, **kw)
    scratch = meta_optimize(frame, "min_variance", books=changed, **kw)
    assert fits["store"] == "grown" and fits["fitted"] > 0 and fits["reused"] > 0, fits
    assert json.dumps(again[0]) == json.dumps(scratch[0])
    assert again[1].to_numpy().tobytes() == scratch[1].to_numpy().tobytes()


# ----------------------------------------------------------------------------- a workflow run on file sources


@pytest.mark.e2e
def test_a_run_on_grown_price_files_equals_a_run_from_scratch(tmp_path):
    """Two sleeves on price tables, then the tables gain a day: the new run in the same runs root fits
    only the new windows (its ledger says how many) and its artifacts are byte-identical to the same
    run in an empty runs root."""
    import pandas as pd

    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    from .helpers import WINDOWS, file_bytes, ledger, table_manifest, write_table_data

    data = tmp_path / "data"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(table_manifest(data, tradingview=False)))
    kw = dict(manifest=manifest, profiles="equal_weight,min_variance", ray=False)
    rows = WINDOWS["train_window"] + 16 * WINDOWS["test_window"] + 1  # the next day opens a sleeve window
    write_table_data(data, n=rows)
    MetaPipeline("meta_tables", run_id="day1", runs_root=tmp_path / "A", **kw).execute()
    write_table_data(data, n=rows + 1)  # the same random walks, one day longer
    grown = MetaPipeline("meta_tables", run_id="day2", runs_root=tmp_path / "A", **kw).execute().run_dir
    scratch = MetaPipeline("meta_tables", run_id="day2", runs_root=tmp_path / "B", **kw).execute().run_dir

    shared = [k for k in file_bytes(scratch) if not k.endswith("provenance.json")]
    assert any(k.startswith("meta/") for k in shared) and any(k.startswith("sleeves/") for k in shared)
    a, b = file_bytes(grown), file_bytes(scratch)
    assert {k: a[k] for k in shared} == {k: b[k] for k in shared}

    def counts(run_dir, stage):
        return [e["params"]["windows"] for e in ledger(run_dir) if e.get("stage") == stage and e.get("status") == "ok"]

    train, test = WINDOWS["train_window"], WINDOWS["test_window"]

    def n_windows(n):
        return len(range(0, n - train, test))

    sleeve_new = n_windows(rows) - n_windows(rows - 1)
    assert sleeve_new == 1
    for c in counts(grown, "sleeve"):
        assert (c["fitted"], c["reused"]) == (2 * sleeve_new, 2 * (n_windows(rows) - sleeve_new)), c
    before, after = (len(pd.read_parquet(d / "meta" / "returns_min_variance.parquet")) for d in (tmp_path / "A" / "day1", grown))
    for c in counts(grown, "meta_optimize"):
        assert (c["fitted"], c["reused"], c["store"]) == (n_windows(after) - n_windows(before), n_windows(before), "grown"), c
    assert all(c["reused"] == 0 for c in counts(scratch, "sleeve") + counts(scratch, "meta_optimize"))
    provenance = json.loads((grown / "sleeves" / "a" / "provenance.json").read_text())
    assert provenance["tasks"]["min_variance"]["windows"] == {"fitted": 1, "reused": n_windows(rows) - 1, "store": "grown"}
