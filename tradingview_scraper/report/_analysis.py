"""Every number of a report, computed from :class:`NodeData` without any I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ._anomalies import anomalies
from ._metrics import calendar, diversification, effective_number, performance, tournament
from ._node import NodeData


@dataclass
class Analysis:
    """The numbers of a report, computed from :class:`NodeData` without any I/O.

    ``anomalies`` holds every finding (``{"profile", "scope", "series", "check",
    "severity", "dates", "detail"}``, errors first); ``thresholds[p]`` the thresholds the
    checks of risk profile ``p`` used, per series (``"meta"`` for the meta stream).
    """

    periods_per_year: int
    calendar: str
    performance: dict[str, dict]
    effective_sleeves: dict[str, float]
    tournament: list[dict]
    diversification: dict[str, dict]
    correlation: dict[str, pd.DataFrame]
    anomalies: list[dict]
    thresholds: dict[str, dict[str, dict]]


def analyse(data: NodeData) -> Analysis:
    """Compute every number the report shows.

    Parameters
    ----------
    data : NodeData

    Returns
    -------
    Analysis
        Performance and effective number of sleeves per profile, the tournament, the
        diversification measures and sleeve correlation per profile (on the meta stream's
        dates), and the anomalies of the meta stream and of every sleeve.

    Raises
    ------
    DataError
        If the meta stream and the sleeves share fewer than 2 dates.
    """
    ppy, cal = calendar(data.stream.index)
    perf = {p: performance(data.stream[p], ppy) for p in data.risk_profiles}
    found: list[dict] = []
    div, corr, thresholds = {}, {}, {}
    for p in data.risk_profiles:
        sleeves = data.sleeves[p]
        div[p] = diversification(data.stream[p], sleeves, data.weights[p]["weights"], ppy)
        corr[p] = div[p]["correlation"]
        thresholds[p] = {}
        for scope, frame in (("meta stream", data.stream[[p]].rename(columns={p: "meta"})), ("sleeve", sleeves)):
            items, used = anomalies(frame)
            thresholds[p].update(used)
            found += [{"profile": p, "scope": scope, **x} for x in items]
    return Analysis(
        periods_per_year=ppy,
        calendar=cal,
        performance=perf,
        effective_sleeves={p: effective_number(data.weights[p]["weights"]) for p in data.risk_profiles},
        tournament=tournament(perf),
        diversification=div,
        correlation=corr,
        anomalies=sorted(found, key=lambda x: x["severity"] != "error"),  # errors first, order kept
        thresholds=thresholds,
    )


def headline(a: Analysis) -> dict:
    """What the report step records in the ledger for run listings (``tvs runs``): the last date of
    the meta stream and each risk profile's out-of-sample Sharpe as ``[profile, sharpe]`` pairs in the
    run's order of risk profiles (None where undefined)."""
    ends = [m["end"] for m in a.performance.values() if m.get("end")]
    return {
        "data_end": max(ends) if ends else None,
        "sharpe": [[p, m["sharpe"] if math.isfinite(m["sharpe"]) else None] for p, m in a.performance.items()],
    }
