"""Every number of a report, computed from :class:`NodeData` without any I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError
from ._metrics import (
    calendar,
    diversification_check,
    effective_number,
    impossible_values,
    performance,
    rolling_anomalies,
    tournament,
)
from ._node import NodeData


@dataclass
class Analysis:
    """The numbers of a report, computed from :class:`NodeData` without any I/O."""

    periods_per_year: int
    calendar: str
    performance: dict[str, dict]
    effective_sleeves: dict[str, float]
    tournament: list[dict]
    diversification: dict[str, dict]
    correlation: dict[str, pd.DataFrame]
    anomalies: list[dict]


def _test_window(data: NodeData, profile: str) -> int:
    wf = data.weights[profile].get("walk_forward") or {}
    if not isinstance(wf.get("test_window"), int):
        raise DataError(
            f"meta/weights_{profile}.json of node {data.node_path!r}: walk_forward.test_window is "
            f"{wf.get('test_window')!r}; an integer number of periods is needed"
        )
    return wf["test_window"]


def analyse(data: NodeData) -> Analysis:
    """Compute every number the report shows.

    Parameters
    ----------
    data : NodeData

    Returns
    -------
    Analysis
        Performance and effective number of sleeves per profile, the tournament, the
        diversification check and sleeve correlation per profile, and every anomaly
        (``{"profile", "scope", "series", "kind", "dates", "detail"}``), impossible values first.

    Raises
    ------
    DataError
        If a weights record lacks its walk-forward test window, or the meta stream and
        the sleeves share fewer than 2 dates.
    """
    from skfolio.measures import correlation

    ppy, cal = calendar(data.stream.index)
    perf = {p: performance(data.stream[p], ppy) for p in data.risk_profiles}
    anomalies: list[dict] = []
    diversification, corr = {}, {}
    for p in data.risk_profiles:
        sleeves = data.sleeves[p]
        diversification[p] = diversification_check(data.stream[p], sleeves, ppy)
        corr[p] = pd.DataFrame(correlation(sleeves.to_numpy(dtype=float)), index=sleeves.columns, columns=sleeves.columns)
        window = _test_window(data, p)
        for scope, frame in (("meta stream", data.stream[[p]]), ("sleeve", sleeves)):
            for a in rolling_anomalies(frame, window, ppy):
                anomalies.append(
                    {
                        "profile": p,
                        "scope": scope,
                        "series": a["series"] if scope == "sleeve" else "meta",
                        "kind": f"rolling {window}-period window",
                        "dates": f"{a['start']} .. {a['end']} ({a['n_windows']} window{'s' * (a['n_windows'] > 1)})",
                        "detail": a["reason"],
                    }
                )
            for a in impossible_values(frame):
                value = "" if not np.isfinite(a["value"]) else f" ({a['value']:.2%})"
                anomalies.append(
                    {
                        "profile": p,
                        "scope": scope,
                        "series": a["series"] if scope == "sleeve" else "meta",
                        "kind": "impossible value",
                        "dates": a["date"],
                        "detail": a["reason"] + value,
                    }
                )
    return Analysis(
        periods_per_year=ppy,
        calendar=cal,
        performance=perf,
        effective_sleeves={p: effective_number(data.weights[p]["weights"]) for p in data.risk_profiles},
        tournament=tournament(perf),
        diversification=diversification,
        correlation=corr,
        anomalies=sorted(anomalies, key=lambda x: x["kind"] != "impossible value"),  # errors first
    )
