"""The walk-forward window store: each window's fit kept across runs, reused while its train rows are unchanged.

A walk-forward window's weights depend on its train rows only (and on what the walk-forward
is: the columns, the risk profile, the bounds, the selection, the window sizes, the code
that fits, and at a meta node with book limits the window's constraints). Its returns and
costs are recomputed from the data on every run (cheap). So when a returns matrix only
grew (its earlier rows unchanged, as a price file that gained a day gives), every window
trained on the earlier rows keeps its fit, and only the windows that reach the new rows are
fitted; the live fit is always fitted.

One store file per walk-forward *identity* (:meth:`WindowStore.open`) below the runs root's
store (``layout.store_dir(runs_root, "windows")``): the prefix of the returns matrix it was
fitted on (its number of rows and a digest of those rows' values and dates) and, per
window, everything the fit produced (weights stored exactly, as float64 bytes; success,
error text, projection distance, infeasibility under book limits). A window is reused only
when the current matrix's same rows have the same digest; a changed earlier row reuses
nothing. A file that is unreadable, fails its checksum or does not describe this identity
is ignored (one log line) and rewritten: the store is never trusted over a fit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("tradingview_scraper")

#: The store files' format; another value is ignored (and rewritten).
FORMAT = "tvs-windows/1"


@dataclass(frozen=True)
class WindowFit:
    """What fitting one walk-forward window produced.

    Attributes
    ----------
    weights : ndarray of shape (n_columns,)
        The window's weights over every column (zero where the selection holds nothing).
    ok : bool
        The optimizer succeeded (False: the window fell back to equal weight).
    error : str or None
        The failure's text (the health record's ``errors`` entry) when it fell back.
    distance : float or None
        Under book limits: how far the projection moved the weights (None: it fell back).
    infeasible : bool
        Under book limits: no allocation meets them on this window.
    """

    weights: np.ndarray
    ok: bool
    error: str | None = None
    distance: float | None = None
    infeasible: bool = False


def rows_digest(values: np.ndarray, index, rows: int) -> str:
    """sha256 of the first ``rows`` rows of a returns matrix: its float64 values (bit for bit) and dates."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(values[:rows], dtype="<f8").tobytes())
    dates = pd.DatetimeIndex(index[:rows])
    h.update(str(dates.tz).encode())
    h.update(np.asarray(dates.as_unit("ns").asi8, dtype="<i8").tobytes())
    return h.hexdigest()


def constraints_digest(cons) -> str:
    """sha256 of a window's book-limit rows (``limits.Constraints``: A, b and labels); ``""`` without limits."""
    if cons is None:
        return ""
    h = hashlib.sha256()
    A = np.ascontiguousarray(cons.A, dtype="<f8")
    h.update(repr(A.shape).encode())
    h.update(A.tobytes())
    h.update(np.ascontiguousarray(cons.b, dtype="<f8").tobytes())
    h.update(json.dumps([list(label) for label in cons.labels]).encode())
    return h.hexdigest()


def window_key(train: np.ndarray, cons) -> str:
    """The key of a window in its store file: its train rows (first, count) and its constraints' digest."""
    return f"{int(train[0])}:{len(train)}:{constraints_digest(cons)}"


def fitting_code() -> str:
    """Digest of the code a window's fit runs: what :func:`backtest.walk_forward` and the selections
    (:func:`sleeve.make_selector`) reach (``codehash.code_hash``: package code and library versions)."""
    from .backtest import walk_forward
    from .codehash import code_hash
    from .sleeve import make_selector

    return hashlib.sha256(f"{code_hash(walk_forward)}\n{code_hash(make_selector)}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class WindowStore:
    """Where walk-forward window fits are kept, and what the fits depend on besides the walk-forward's own arguments.

    Picklable (a Ray task carries it): a directory on a file system every worker sees, and
    digests.

    Parameters
    ----------
    directory : str
        The store directory (``RunContext.store("windows")``).
    code : str
        :func:`fitting_code`, computed once by whoever builds the store (the driver).
    context : dict
        What a caller's arguments to the walk-forward depend on that the walk-forward cannot
        see: the sleeve's ``selection`` block (its selector is a function), a meta node's book
        limits. Part of every identity.
    """

    directory: str
    code: str
    context: dict = field(default_factory=dict)

    @classmethod
    def at(cls, directory: str | Path | None) -> WindowStore | None:
        """The store in ``directory`` (absolute, so a worker with another working directory finds it); None for None."""
        if directory is None:
            return None
        return cls(str(Path(directory).resolve()), fitting_code())

    def within(self, **context) -> WindowStore:
        """This store with ``context`` added to every identity."""
        return WindowStore(self.directory, self.code, {**self.context, **context})

    def open(self, X, identity: dict) -> WindowFits:
        """The fits kept for the walk-forward ``identity`` over returns ``X`` that are still valid for ``X``.

        Parameters
        ----------
        X : DataFrame of shape (n_obs, n_columns)
            The returns the walk-forward fits.
        identity : dict
            The walk-forward's own arguments that the fits depend on (JSON-able).
        """
        full = {"format": FORMAT, "code": self.code, "context": self.context, **identity}
        text = json.dumps(full, sort_keys=True, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()
        from .layout import store_file

        return WindowFits(store_file(self.directory, key, ".json"), json.loads(text), X)


class WindowFits:
    """One walk-forward's window fits: those it may reuse (:meth:`get`) and those it holds now (:meth:`keep`).

    ``status`` says what the store held: ``"new"`` (no file), ``"grown"`` (the history only
    grew, or is the same), ``"changed"`` (an earlier row changed, or the history shrank:
    nothing reused), ``"other"`` (the file describes another identity), or ``"unreadable: ..."``.
    """

    def __init__(self, path: Path, identity: dict, X) -> None:
        self.path, self.identity = path, identity
        self.values, self.index = X.to_numpy(dtype=float), X.index
        self.n_columns = X.shape[1]
        self._stored: dict[str, WindowFit] = {}
        self._current: dict[str, WindowFit] = {}
        self._prefix = 0
        self.fitted = 0
        self.status = self._load()

    def get(self, key: str) -> WindowFit | None:
        """The stored fit of window ``key`` when its train rows are unchanged, else None."""
        return self._stored.get(key)

    def keep(self, key: str, fit: WindowFit, *, fitted: bool) -> None:
        """Hold window ``key``'s fit for :meth:`save` (``fitted``: fitted now, not reused)."""
        self._current[key] = fit
        self.fitted += int(fitted)

    def save(self) -> None:
        """Write the windows held now, fitted on every row of ``X``, atomically (last writer wins:
        entries are deterministic); nothing when the file already says exactly that."""
        rows = len(self.values)
        if not self.fitted and self.status == "grown" and self._prefix == rows:
            return
        doc = {
            "format": FORMAT,
            "identity": self.identity,
            "prefix": {"rows": rows, "digest": rows_digest(self.values, self.index, rows)},
            "windows": [_encode(k, f) for k, f in self._current.items()],
        }
        body = json.dumps(doc, sort_keys=True, allow_nan=False).encode()
        from .layout import write_store_file

        try:
            write_store_file(self.path, hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        except OSError as exc:  # a store that cannot be written costs the next run its reuse, not this run
            logger.warning("window store %s: not written (%s)", self.path, exc)

    def _load(self) -> str:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return "new"
        except OSError as exc:
            return self._unreadable(exc)
        try:
            head, _, body = raw.partition(b"\n")
            if hashlib.sha256(body).hexdigest().encode() != head:
                raise ValueError("checksum mismatch (a truncated or edited file)")
            doc = json.loads(body)
            if doc.get("format") != FORMAT or doc.get("identity") != self.identity:
                return "other"
            rows, digest = int(doc["prefix"]["rows"]), str(doc["prefix"]["digest"])
            stored = dict(_decode(w, self.n_columns) for w in doc["windows"])
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is not used
            return self._unreadable(exc)
        if rows > len(self.values) or rows_digest(self.values, self.index, rows) != digest:
            return "changed"
        self._stored, self._prefix = stored, rows
        return "grown"

    def _unreadable(self, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("window store %s is unreadable (%s): ignored, its windows are fitted again", self.path, reason)
        return f"unreadable: {reason}"


def _encode(key: str, fit: WindowFit) -> dict:
    weights = np.ascontiguousarray(fit.weights, dtype="<f8")
    return {
        "key": key,
        "weights": base64.b64encode(weights.tobytes()).decode("ascii"),
        "ok": bool(fit.ok),
        "error": fit.error,
        # a float's JSON text (its repr) reads back to the same bits
        "distance": None if fit.distance is None else float(fit.distance),
        "infeasible": bool(fit.infeasible),
    }


def _decode(entry: dict, n_columns: int) -> tuple[str, WindowFit]:
    weights = np.frombuffer(base64.b64decode(entry["weights"], validate=True), dtype="<f8").astype(float)
    if weights.shape != (n_columns,) or not np.isfinite(weights).all():
        raise ValueError(f"window {entry['key']}: {weights.size} weights, {n_columns} expected, or not finite")
    error, distance = entry["error"], entry["distance"]
    if not isinstance(entry["ok"], bool) or not isinstance(entry["infeasible"], bool):
        raise ValueError(f"window {entry['key']}: ok and infeasible must be booleans")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"window {entry['key']}: error must be text")
    if distance is not None and not isinstance(distance, float):
        raise ValueError(f"window {entry['key']}: distance must be a number")
    return str(entry["key"]), WindowFit(weights, entry["ok"], error, distance, entry["infeasible"])
