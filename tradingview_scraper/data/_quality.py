"""The data-quality pass of a sleeve's prices: findings that would make a silent wrong book, and the policy on them.

Each detector looks at the symbols' own series (before the inner join of their calendars,
which would hide a dying symbol by silently shortening every other one) and returns
findings that name the symbol, its file and the dates. :func:`quality_findings` runs them
all under the ``health.data_quality`` policy of the manifest; :func:`refuse` turns the
findings the policy refuses into one :class:`~tradingview_scraper.errors.DataError` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ._checks import _day


class Check(StrEnum):
    """The data-quality checks, by their key in ``health.data_quality``."""

    RAGGED_HISTORY = "ragged_history"
    HALTED = "halted"
    STALE_PRICES = "stale_prices"
    PRICE_JUMPS = "price_jumps"
    SHIFTED_TIMESTAMPS = "shifted_timestamps"


#: What each check does with a finding: refuse the sleeve, warn, or not look.
ACTIONS: tuple[str, ...] = ("error", "warn", "off")

#: The policy a ``health.data_quality`` block completes. A symbol that would shorten the
#: whole sleeve, or a halted one that would take weight in today's book, is refused; the
#: rest are named and let through.
DATA_QUALITY_DEFAULTS: dict[str, Any] = {
    Check.RAGGED_HISTORY.value: "error",
    Check.HALTED.value: "error",
    Check.STALE_PRICES.value: "warn",
    Check.PRICE_JUMPS.value: "warn",
    Check.SHIFTED_TIMESTAMPS.value: "warn",
    "max_edge_gap": 5,
    "max_stale_run": 10,
    "max_jump": 5.0,
}

#: A daily bar stamped this close to midnight (but not at it) lands on a calendar day that
#: depends on the time zone it was written in (nanoseconds).
_NEAR_MIDNIGHT_NS = 3 * 3_600 * 10**9
_DAY_NS = 86_400 * 10**9
#: The rise at which a SHORT position loses all its value (``-min(r, 1)`` reaches -100%).
_SHORT_WIPEOUT = 2.0
_MAX_SHOWN = 3


def data_quality_policy(health: Mapping[str, Any] | None) -> dict[str, Any]:
    """The complete ``health.data_quality`` policy: the block's keys over :data:`DATA_QUALITY_DEFAULTS`.

    Raises
    ------
    ConfigError
        An unknown key, an action outside ``"error"``, ``"warn"``, ``"off"``, or a threshold
        out of range (``max_edge_gap`` and ``max_stale_run`` integers >= 1, ``max_jump`` > 1).
    """
    block = dict((health or {}).get("data_quality") or {})
    unknown = sorted(set(block) - set(DATA_QUALITY_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"health.data_quality has unknown key(s) {', '.join(map(repr, unknown))}; valid keys are "
            f"{', '.join(map(repr, DATA_QUALITY_DEFAULTS))}"
        )
    policy = {**DATA_QUALITY_DEFAULTS, **block}
    for check in Check:
        if policy[check.value] not in ACTIONS:
            raise ConfigError(
                f"health.data_quality.{check.value} is {policy[check.value]!r}; valid actions are "
                f"{', '.join(map(repr, ACTIONS))}"
            )
    for key in ("max_edge_gap", "max_stale_run"):
        value = policy[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"health.data_quality.{key} is {value!r}; expected an integer >= 1 (periods)")
    jump = policy["max_jump"]
    if isinstance(jump, bool) or not isinstance(jump, int | float) or not jump > 1:
        raise ConfigError(
            f"health.data_quality.max_jump is {jump!r}; expected a price ratio > 1 (5 flags a one-period "
            "move beyond x5 or /5)"
        )
    return policy


def quality_findings(
    series: Mapping[str, pd.Series],
    files: Mapping[str, str],
    policy: Mapping[str, Any] | None = None,
    *,
    direction: str = "LONG",
) -> list[dict]:
    """Every data-quality finding on a sleeve's price series, with the action its policy takes.

    Parameters
    ----------
    series : dict of symbol -> Series of shape (n_dates_of_symbol,)
        Each symbol's close prices on its own calendar (tz-naive DatetimeIndex, strictly
        increasing, prices finite and > 0), already trimmed to the sleeve's ``start`` /
        ``end`` and with their original times of day.
    files : dict of symbol -> str
        Where each symbol's prices come from (a file, a dataset), for the messages.
    policy : dict, optional
        A complete ``health.data_quality`` policy (:func:`data_quality_policy`); the
        defaults when None.
    direction : {"LONG", "SHORT"}, default "LONG"
        The sleeve's direction: in a SHORT sleeve a one-period rise of 100% or more (a
        short position's total loss) is a price jump whatever ``max_jump`` says.

    Returns
    -------
    list of dict
        One record per finding, checks in :class:`Check` order, symbols in ``series``
        order: ``check``, ``action`` (``"error"`` or ``"warn"``), ``symbol``, ``file``,
        ``start``, ``end`` (ISO dates of the stretch concerned) and ``message`` (one line
        naming the symbol, the file and the dates). Checks set to ``"off"`` find nothing.
    """
    policy = dict(DATA_QUALITY_DEFAULTS if policy is None else policy)
    series = {sym: s for sym, s in series.items() if len(s)}
    # times of day on int64 nanoseconds: DatetimeIndex.normalize infers a frequency each call
    stamps = {sym: s.index.as_unit("ns").asi8 for sym, s in series.items()}
    tod = {sym: v % _DAY_NS for sym, v in stamps.items()}
    daily = all(not (np.diff(v - tod[sym]) == 0).any() for sym, v in stamps.items())
    # Edges and stale runs count calendar dates, so a few minutes of intraday bars are not a date.
    dates = {sym: v - tod[sym] for sym, v in stamps.items()}
    days = {
        sym: pd.Series(s.to_numpy(), index=pd.DatetimeIndex(dates[sym]), name=sym) if daily else s
        for sym, s in series.items()
    }
    found: list[dict] = []
    if policy[Check.RAGGED_HISTORY] != "off":
        found += _ragged(days, dates, files, int(policy["max_edge_gap"]))
    if policy[Check.HALTED] != "off" or policy[Check.STALE_PRICES] != "off":
        found += _stale(days, dates, files, int(policy["max_stale_run"]))
    if policy[Check.PRICE_JUMPS] != "off":
        found += _jumps(days, files, float(policy["max_jump"]), direction)
    if daily and policy[Check.SHIFTED_TIMESTAMPS] != "off":
        found += _shifted(series, tod, files)
    out = []
    for f in found:
        action = policy[f["check"]]
        if action != "off":
            out.append({"check": f["check"], "action": action, **{k: v for k, v in f.items() if k != "check"}})
    return out


def refuse(findings: list[dict]) -> list[dict]:
    """The findings a policy lets through; raise on those it refuses.

    Parameters
    ----------
    findings : list of dict
        Records of :func:`quality_findings`.

    Returns
    -------
    list of dict
        The findings whose action is ``"warn"``.

    Raises
    ------
    DataError
        One line: the first refused finding, how many more there are, and the key that
        would let it through.
    """
    refused = [f for f in findings if f["action"] == "error"]
    if refused:
        first, more = refused[0], len(refused) - 1
        others = f" (and {more} more refused finding{'s' if more > 1 else ''})" if more else ""
        raise DataError(
            f"data refused by health.data_quality.{first['check']}: {first['message']}{others}; "
            f'set health.data_quality.{first["check"]} to "warn" to accept it'
        )
    return [f for f in findings if f["action"] == "warn"]


def _finding(check: Check, symbol: str, files: Mapping[str, str], start, end, message: str) -> dict:
    return {
        "check": check.value,
        "symbol": symbol,
        "file": str(files.get(symbol, "?")),
        "start": _day(pd.Timestamp(start)),
        "end": _day(pd.Timestamp(end)),
        "message": f"symbol {symbol!r} ({files.get(symbol, '?')}) {message}",
    }


def _ragged(
    days: Mapping[str, pd.Series], dates: Mapping[str, np.ndarray], files: Mapping[str, str], max_gap: int
) -> list[dict]:
    """Symbols whose history starts or ends more than ``max_gap`` of the others' calendar dates away from theirs.

    ``dates`` holds each bar's calendar date (int64 nanoseconds at midnight).
    """
    if len(days) < 2:
        return []
    # A symbol's own dates lie within its first..last, so the union's dates outside that
    # span are the other symbols' dates only.
    union = np.unique(np.concatenate(list(dates.values())))
    last_day = pd.Timestamp(int(union[-1]))
    first_day = pd.Timestamp(int(union[0]))
    out = []
    for sym, s in days.items():
        first, last = s.index[0], s.index[-1]
        lead = int(np.searchsorted(union, dates[sym][0]))
        lag = int(len(union) - np.searchsorted(union, dates[sym][-1], side="right"))
        if lag > max_gap:
            out.append(_finding(
                Check.RAGGED_HISTORY, sym, files, last, last_day,
                f"has no price after {_day(last)} while the other symbols run to {_day(last_day)} "
                f"({lag} more dates, beyond health.data_quality.max_edge_gap = {max_gap}): the inner join "
                f"would end the whole sleeve on {_day(last)}",
            ))  # fmt: skip
        if lead > max_gap:
            out.append(_finding(
                Check.RAGGED_HISTORY, sym, files, first_day, first,
                f"has no price before {_day(first)} while the other symbols start on {_day(first_day)} "
                f"({lead} dates earlier, beyond health.data_quality.max_edge_gap = {max_gap}): the inner join "
                f"would start the whole sleeve on {_day(first)}",
            ))  # fmt: skip
    return out


def _stale(
    days: Mapping[str, pd.Series], dates: Mapping[str, np.ndarray], files: Mapping[str, str], max_run: int
) -> list[dict]:
    """Prices unchanged over more than ``max_run`` calendar dates: ``halted`` when that reaches the sleeve's last date.

    On daily bars the dates are the periods. A symbol's earlier runs make one
    ``stale_prices`` finding (the first few shown).
    """
    end = min(s.index[-1] for s in days.values())
    out = []
    for sym, s in days.items():
        values = s.to_numpy()
        same = np.concatenate(([False], values[1:] == values[:-1]))
        edges = np.flatnonzero(np.diff(np.concatenate(([0], same.astype(np.int8), [0]))))
        runs = [(int(a) - 1, int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        # the number of date changes up to each bar: a run's length in calendar dates
        steps = np.concatenate(([0], np.cumsum(np.diff(dates[sym]) != 0)))
        runs = [(a, b, int(steps[b] - steps[a])) for a, b in runs if steps[b] - steps[a] > max_run]

        def span(a: int, b: int, n: int) -> str:
            return f"{n} unchanged periods" if n == b - a else f"unchanged over {n} dates, {b - a} bars"

        if runs and s.index[runs[-1][1]] >= end:
            a, b, n = runs.pop()
            out.append(_finding(
                Check.HALTED, sym, files, s.index[a], s.index[b],
                f"is constant at {values[a]:g} from {_day(s.index[a])} to {_day(s.index[b])} ({span(a, b, n)}, "
                f"beyond health.data_quality.max_stale_run = {max_run}), to the sleeve's last date: a halted or "
                "dead price series that takes weight in today's book",
            ))  # fmt: skip
        if runs:
            shown = "; ".join(
                f"at {values[a]:g} from {_day(s.index[a])} to {_day(s.index[b])} ({span(a, b, n)})"
                for a, b, n in runs[:_MAX_SHOWN]
            )
            more = f" and {len(runs) - _MAX_SHOWN} more such runs" if len(runs) > _MAX_SHOWN else ""
            out.append(_finding(
                Check.STALE_PRICES, sym, files, s.index[runs[0][0]], s.index[runs[-1][1]],
                f"is constant {shown}{more}, beyond health.data_quality.max_stale_run = {max_run}: stale prices",
            ))  # fmt: skip
    return out


def _jumps(days: Mapping[str, pd.Series], files: Mapping[str, str], max_jump: float, direction: str) -> list[dict]:
    """One-period price ratios beyond ``max_jump`` either way (in a SHORT sleeve, also rises of 100% or more)."""
    rise_limit = min(max_jump, _SHORT_WIPEOUT) if direction == "SHORT" else max_jump
    out = []
    for sym, s in days.items():
        values = s.to_numpy()
        if len(values) < 2:
            continue
        ratio = values[1:] / values[:-1]
        bad = np.flatnonzero(((ratio >= rise_limit) & (ratio > 1)) | (ratio <= 1.0 / max_jump))
        if not len(bad):
            continue
        shown = "; ".join(
            f"{values[i]:g} on {_day(s.index[i])} to {values[i + 1]:g} on {_day(s.index[i + 1])} (x{ratio[i]:.3g})"
            for i in bad[:_MAX_SHOWN]
        )
        more = f" and {len(bad) - _MAX_SHOWN} more" if len(bad) > _MAX_SHOWN else ""
        wiped = direction == "SHORT" and (ratio[bad] >= _SHORT_WIPEOUT).any()
        why = (
            "a rise of 100% or more wipes out a SHORT position (its return is capped at -100%)"
            if wiped else f"beyond health.data_quality.max_jump = {max_jump:g}"
        )
        out.append(_finding(
            Check.PRICE_JUMPS, sym, files, s.index[bad[0]], s.index[bad[-1] + 1],
            f"jumps from {shown}{more}: {why}",
        ))  # fmt: skip
    return out


def _shifted(series: Mapping[str, pd.Series], tod: Mapping[str, np.ndarray], files: Mapping[str, str]) -> list[dict]:
    """Daily bars stamped near, but not at, midnight (``tod``: each bar's time of day in ns).

    The calendar day such a bar counts for depends on the time zone it was written in.
    """
    out = []
    for sym, s in series.items():
        t = tod[sym]
        near = (t > 0) & ((t <= _NEAR_MIDNIGHT_NS) | (t >= _DAY_NS - _NEAR_MIDNIGHT_NS))
        if not near.any():
            continue
        hit = s.index[near]
        times = sorted({t.strftime("%H:%M") for t in hit})
        at_midnight = int((t == 0).sum())
        mix = f", {at_midnight} at midnight" if at_midnight else ""
        out.append(_finding(
            Check.SHIFTED_TIMESTAMPS, sym, files, hit[0], hit[-1],
            f"has {int(near.sum())} of {len(s)} daily bars stamped at {', '.join(times[:_MAX_SHOWN])}"
            f"{mix} ({hit[0].isoformat(sep=' ')} .. {hit[-1].isoformat(sep=' ')}): near midnight, the day a "
            "bar counts for depends on the time zone it was written in, so its returns may line up with the "
            "other symbols' previous or next day",
        ))  # fmt: skip
    return out
