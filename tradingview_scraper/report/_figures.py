"""The report's figures as PNG bytes (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._pm import PM_FIGURE_TITLES, pm_figures

if TYPE_CHECKING:
    from ._analysis import Analysis
    from ._node import NodeData

#: Figures of ``report_assets/`` (``<name>.png``), in the report's order.
FIGURES = ("cumulative", "drawdowns", "sleeves", "allocation", "correlation", "risk", "changes")

_FIGURE_TITLES = {
    "cumulative": "Cumulative out-of-sample return per risk profile",
    "drawdowns": "Out-of-sample drawdowns per risk profile",
    "sleeves": "Cumulative out-of-sample return per sleeve, with the meta stream",
    "allocation": "Sleeve allocation per risk profile, with the weight bounds",
    "correlation": "Sleeve correlation per risk profile",
    **PM_FIGURE_TITLES,
}
#: Resolution of every figure (dots per inch).
DPI = 90
#: Sleeves a figure shows by name at most: beyond, the largest by meta weight (the tables list
#: every sleeve). A bar or a legend entry per sleeve would make figures of thousands of
#: sleeves unreadable, then larger than an image can be.
MAX_FIGURE_SLEEVES = 12
#: Sleeves a correlation heatmap writes its values in at most: beyond, the cells are too small
#: to read them, and the correlation table beside the figure lists every value.
MAX_ANNOTATED_SLEEVES = 6


def largest_sleeves(weights: Mapping[str, Mapping[str, float]], names: list[str]) -> list[str]:
    """``names`` if few enough, else the :data:`MAX_FIGURE_SLEEVES` with the largest weight in any profile, in order."""
    if len(names) <= MAX_FIGURE_SLEEVES:
        return names
    peak = {s: max(w.get(s, 0.0) for w in weights.values()) for s in names}
    keep = set(sorted(names, key=lambda s: (-peak[s], str(s)))[:MAX_FIGURE_SLEEVES])
    return [s for s in names if s in keep]


def _shown(shown: int, total: int) -> str:
    return "" if shown == total else f" ({shown} largest of {total} sleeves)"



def png(fig) -> bytes:
    """PNG bytes of a figure made by :func:`_figure`: laid out once, drawn once.

    ``savefig`` draws a figure that holds a layout engine twice (the first time only to run
    the engine); here the same constrained-layout solver runs once, then one draw. An axis
    without a label skips matplotlib's label placement, which would measure every tick label
    once more per pass only to place an empty text. The pixels are those of ``savefig`` with
    ``layout="constrained"``; the opaque image is written as RGB at zlib level 3, smaller
    and faster to encode than RGBA at the default level 6.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from PIL import Image

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.label.get_text():
                axis.set_label_coords(0.5, 0.5)  # fixed coordinates: no automatic placement
                axis.label.set_visible(False)
    canvas = FigureCanvasAgg(fig)
    ConstrainedLayoutEngine().execute(fig)
    canvas.draw()
    rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    rgba.convert("RGB").save(buf, format="png", compress_level=3, dpi=(DPI, DPI))
    return buf.getvalue()


def _figure(width: float, height: float):
    """An opaque ``width`` x ``height`` inch figure at :data:`DPI` with no layout engine (:func:`png` lays it out)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, facecolor="white", layout="none")


def _grid(n: int, width: float = 5.6, height: float = 3.4):
    """A figure with one ``width`` x ``height`` inch panel per risk profile, at most two columns."""
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = _figure(width * cols, height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _date_axis(ax) -> None:
    """Date ticks and percent labels on ``ax``; call it once the lines are plotted."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import FixedFormatter, FixedLocator, PercentFormatter

    locator = AutoDateLocator(maxticks=7)
    concise = ConciseDateFormatter(locator)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(concise)
    # the date ticks depend only on the x limits, which the layout leaves alone: place and
    # label them once instead of in every pass of the layout and the draw over the axis
    ticks = ax.xaxis.get_majorticklocs()
    fixed = FixedFormatter(concise.format_ticks(ticks))
    fixed.set_offset_string(concise.get_offset())
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(fixed)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)


def figures_key(data: NodeData) -> str:
    """A digest of everything the figures of ``data`` depend on: equal digests, identical PNG bytes.

    What :func:`figures` plots (the streams, the sleeves' returns, the weights, the risk and
    rebalance records, the risk profiles; the correlations it shows derive from the sleeves'
    returns), the report package's source, and the versions of the libraries that draw and
    encode. Not the run id: no figure shows it (a run's ``risk_<p>.json`` and
    ``rebalance_<p>.json`` name their run, which is left out of the digest).

    Returns
    -------
    str
        64 hex digits (sha256).
    """
    import hashlib
    import json
    from importlib.metadata import version
    from pathlib import Path

    import pandas as pd

    h = hashlib.sha256()

    def frame(df: pd.DataFrame) -> None:
        h.update(json.dumps([list(map(str, df.columns)), list(map(str, df.dtypes)), len(df)]).encode())
        h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
        h.update(np.ascontiguousarray(df.to_numpy(dtype=float)).tobytes())

    def record(obj: Any) -> None:
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != "run_id"}
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())

    for lib in ("matplotlib", "pillow", "numpy", "pandas", "skfolio"):
        h.update(f"{lib}={version(lib)};".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode() + source.read_bytes())
    record(list(data.risk_profiles))
    frame(data.stream)
    for p in data.risk_profiles:
        frame(data.sleeves[p])
        for records in (data.weights, data.risk, data.rebalance):
            record(records.get(p))
    return h.hexdigest()


def figures(data: NodeData, a: Analysis, *, render: Callable[[Any], bytes] = png) -> dict[str, bytes]:
    """PNG bytes of every figure of :data:`FIGURES` (matplotlib's Agg canvas, no pyplot state).

    Parameters
    ----------
    data : NodeData
    a : Analysis
    render : callable, default :func:`png`
        The PNG bytes of a finished matplotlib ``Figure`` (e.g. matplotlib's own ``savefig``
        with a constrained layout, to compare pixels).

    Returns
    -------
    dict of name -> bytes

    Notes
    -----
    Most of a report's time is spent here, in matplotlib's per-artist work, so the figures
    avoid the part of it that changes no pixel: titles are placed at ``y=1.0`` (nothing sits
    above the axes, and the automatic placement measures the whole y axis in every layout
    pass), the correlation values stay out of the layout (they lie inside their axes), and
    the date ticks are placed once (:func:`_date_axis`). See also :func:`png`.
    """
    from matplotlib.ticker import PercentFormatter
    from skfolio.measures import get_cumulative_returns, get_drawdowns

    profiles = data.risk_profiles
    dates = data.stream.index.to_numpy()
    r = data.stream.to_numpy(dtype=float)
    out = {}

    for name, values, ylabel in (
        ("cumulative", get_cumulative_returns(r, compounded=True) - 1.0, "cumulative return"),
        ("drawdowns", get_drawdowns(r, compounded=True), "drawdown"),
    ):
        fig = _figure(9, 4)
        ax = fig.add_subplot()
        for j, p in enumerate(profiles):
            ax.plot(dates, values[:, j], lw=1.3, label=p)
        _date_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(_FIGURE_TITLES[name], fontsize=11, y=1.0)
        ax.legend(fontsize=8, ncols=min(4, len(profiles)))
        out[name] = render(fig)

    fig, axes = _grid(len(profiles))
    for ax, p in zip(axes, profiles, strict=True):
        sl = data.sleeves[p].loc[data.stream.index.intersection(data.sleeves[p].index)]
        names = largest_sleeves({p: data.weights[p]["weights"]}, list(sl.columns))
        cum = get_cumulative_returns(sl[names].to_numpy(dtype=float), compounded=True) - 1.0
        for j, s in enumerate(names):
            ax.plot(sl.index.to_numpy(), cum[:, j], lw=1.0, label=str(s))
        meta = get_cumulative_returns(data.stream[p].to_numpy(dtype=float), compounded=True) - 1.0
        ax.plot(dates, meta, lw=2.0, color="black", label="meta")
        _date_axis(ax)
        ax.set_title(p + _shown(len(names), len(sl.columns)), fontsize=10, y=1.0)
        ax.legend(fontsize=7)
    fig.suptitle(_FIGURE_TITLES["sleeves"], fontsize=11)
    out["sleeves"] = render(fig)

    every = list(data.weights[profiles[0]]["weights"])
    sleeves = largest_sleeves({p: data.weights[p]["weights"] for p in profiles}, every)
    fig = _figure(9, 1.2 + 0.35 * len(sleeves) * max(1, len(profiles) / 2))
    ax = fig.add_subplot()
    height = 0.8 / len(profiles)
    for j, p in enumerate(profiles):
        w = data.weights[p]["weights"]
        ax.barh(np.arange(len(sleeves)) + j * height, [w.get(s, 0.0) for s in sleeves], height=height, label=p)
    bounds = data.weights[profiles[0]]["bounds"]
    for x in (bounds["min_weight"], bounds["max_weight"]):
        ax.axvline(x, ls="--", lw=1, color="grey")
    ax.set_yticks(np.arange(len(sleeves)) + 0.4 - height / 2, sleeves)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(_FIGURE_TITLES["allocation"] + " (dashed)" + _shown(len(sleeves), len(every)), fontsize=11, y=1.0)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    out["allocation"] = render(fig)

    k = min(len(data.sleeves[profiles[0]].columns), MAX_FIGURE_SLEEVES)
    fig, axes = _grid(len(profiles), width=min(4.0 + 0.35 * k, 7.0), height=min(3.2 + 0.3 * k, 6.5))
    for ax, p in zip(axes, profiles, strict=True):
        names = largest_sleeves({p: data.weights[p]["weights"]}, list(a.correlation[p].columns))
        c = a.correlation[p].loc[names, names]
        im = ax.imshow(c.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        labels = [str(s) for s in c.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        if len(labels) <= MAX_ANNOTATED_SLEEVES:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    v = c.iat[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, in_layout=False,
                            color="white" if abs(v) > 0.6 else "black")
        ax.set_title(p + _shown(len(names), len(a.correlation[p].columns)), fontsize=10, y=1.0)
        fig.colorbar(im, ax=ax, shrink=0.8, use_gridspec=False)
    fig.suptitle(_FIGURE_TITLES["correlation"], fontsize=11)
    out["correlation"] = render(fig)
    out.update(pm_figures(data, render))
    return out
