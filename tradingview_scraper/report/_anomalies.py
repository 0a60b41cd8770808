"""Anomaly checks of return streams: impossible values, broken wealth paths, jumps, stale prices."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
import pandas as pd

#: Expected number of false flags per series and check under the null model: the level
#: from which every data-grounded threshold below is derived.
FALSE_ALARMS = 0.01
#: Degrees of freedom of the null model of returns for the jump check: a Student t with 3
#: degrees of freedom has the cubic tails measured in daily asset returns.
TAIL_DF = 3
#: Scale that turns a median absolute deviation into a standard deviation for normal data.
MAD_TO_STD = 1.4826


class Check(StrEnum):
    """What an anomaly is: the first two are errors in the data or the computation."""

    NON_FINITE = "non-finite return"
    TOTAL_LOSS = "return <= -100%"
    BROKEN_WEALTH = "broken wealth path"
    JUMP = "jump"
    STALE = "stale prices"

    @property
    def severity(self) -> str:
        """``"error"`` (impossible for a real stream) or ``"warning"`` (improbable: check the data)."""
        return "warning" if self in (Check.JUMP, Check.STALE) else "error"


def jump_cutoff(n: int) -> float:
    """Robust z-score beyond which a return is a jump, for a series of ``n`` returns.

    The cutoff is the |z| that Student-t returns with :data:`TAIL_DF` degrees of freedom,
    scaled by the same robust z-score, exceed with probability :data:`FALSE_ALARMS` / ``n``:
    a fat-tailed but clean series of ``n`` returns crosses it :data:`FALSE_ALARMS` times
    on average. It grows with ``n`` (about 34 for 252 returns, 64 for 1,759, 115 for 10,000).
    """
    from scipy.stats import t

    return float(t.isf(FALSE_ALARMS / (2 * n), TAIL_DF) / (MAD_TO_STD * t.ppf(0.75, TAIL_DF)))


def stale_run(n: int, zero_share: float) -> int:
    """Shortest run of exactly-zero returns that counts as stale prices, for ``n`` returns.

    With zeros arriving independently at the series' own rate ``zero_share``, runs of
    ``k`` zeros are expected about ``n * zero_share**k`` times; the threshold is the
    smallest ``k`` >= 2 for which that is below :data:`FALSE_ALARMS`. A series without
    zeros has no run to flag (the threshold is then 2).
    """
    if not 0.0 < zero_share < 1.0:
        return 2
    return max(2, math.ceil(math.log(FALSE_ALARMS / n) / math.log(zero_share)))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` positions of every run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _dates(index: pd.Index, first: int, last: int) -> str:
    if first == last:
        return _day(index[first])
    return f"{_day(index[first])} .. {_day(index[last])} ({last - first + 1} returns)"


def _day(ts) -> str:
    return pd.Timestamp(ts).date().isoformat()


def series_anomalies(returns: pd.Series) -> tuple[list[dict], dict]:
    """Every anomaly of one return stream, and the thresholds its checks used.

    Checks, in order: non-finite returns and returns <= -100% (a loss beyond the whole
    capital: impossible for a long position, and the synthetic-long stream of a SHORT
    sleeve is capped at -100%); a broken wealth path (dates not strictly increasing, or the
    compounded wealth reaching <= 0); jumps (a robust z-score ``(r - median) / (1.4826 *
    MAD)`` beyond :func:`jump_cutoff`); stale prices (a run of exactly-zero returns at least
    :func:`stale_run` long).

    Parameters
    ----------
    returns : Series of shape (n_dates,)
        Simple returns, DatetimeIndex.

    Returns
    -------
    findings : list of dict
        ``{"check": Check, "dates", "detail"}``, in the order above.
    thresholds : dict
        ``n_obs``, ``median``, ``mad``, ``jump_cutoff``, ``zero_share``, ``stale_run``.
    """
    from skfolio.measures import get_drawdowns

    r = returns.to_numpy(dtype=float)
    index = returns.index
    out: list[dict] = []
    finite = np.isfinite(r)
    for a, b in _runs(~finite):
        out.append({"check": Check.NON_FINITE, "dates": _dates(index, a, b), "detail": "NaN or infinite"})
    loss = finite & (r <= -1.0)
    for a, b in _runs(loss):
        worst = float(np.min(r[a : b + 1]))
        out.append({"check": Check.TOTAL_LOSS, "dates": _dates(index, a, b), "detail": f"return {worst:.2%}"})

    bad_order = np.flatnonzero(~np.asarray(index[1:] > index[:-1]))
    if len(bad_order):
        i = int(bad_order[0]) + 1
        out.append({"check": Check.BROKEN_WEALTH, "dates": _day(index[i]),
                    "detail": f"dates not strictly increasing ({len(bad_order)} times, first after {_day(index[i - 1])})"})
    clean = np.where(finite, r, 0.0)
    broke = np.flatnonzero(np.cumprod(1.0 + clean) <= 0) if len(clean) else np.array([], dtype=int)
    if len(broke):
        worst = float(np.min(get_drawdowns(clean, compounded=True)))
        out.append({"check": Check.BROKEN_WEALTH, "dates": _day(index[broke[0]]),
                    "detail": f"compounded wealth <= 0 from here (max drawdown {worst:.2%}, beyond -100%)"})

    usable = finite & ~loss
    n = int(usable.sum())
    x = r[usable]
    median = float(np.median(x)) if n else float("nan")
    mad = float(np.median(np.abs(x - median))) if n else float("nan")
    cutoff = jump_cutoff(n) if n else float("nan")
    if n and mad > 0:
        z = np.full(len(r), np.nan)
        z[usable] = (x - median) / (MAD_TO_STD * mad)
        for i in np.flatnonzero(np.abs(np.nan_to_num(z)) > cutoff):
            out.append({"check": Check.JUMP, "dates": _day(index[i]),
                        "detail": f"return {r[i]:+.2%}: robust z {z[i]:+.0f}, beyond +-{cutoff:.0f}"})

    zeros = finite & (r == 0.0)
    share = float(zeros.sum() / len(r)) if len(r) else 0.0
    k = stale_run(max(len(r), 1), share)
    for a, b in _runs(zeros):
        if b - a + 1 >= k:
            out.append({"check": Check.STALE, "dates": _dates(index, a, b),
                        "detail": f"{b - a + 1} returns of exactly 0 in a row (threshold {k})"})
    thresholds = {"n_obs": n, "median": median, "mad": mad, "jump_cutoff": cutoff, "zero_share": share, "stale_run": k}
    return out, thresholds


def anomalies(returns: pd.DataFrame) -> tuple[list[dict], dict[str, dict]]:
    """:func:`series_anomalies` of every column.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_series)

    Returns
    -------
    findings : list of dict
        ``{"series", "check", "severity", "dates", "detail"}``, series by series.
    thresholds : dict of series -> dict
    """
    found, thresholds = [], {}
    for col in returns.columns:
        items, thresholds[str(col)] = series_anomalies(returns[col])
        found += [{"series": str(col), **x, "severity": x["check"].severity} for x in items]
    return found, thresholds
