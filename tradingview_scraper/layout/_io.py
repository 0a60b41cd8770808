"""Artifact I/O: atomic writes, the JSON and parquet formats of artifacts, and the watch on both (``stages.watch``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError, one_line

#: Suffix of the temp files of atomic writes (``.<name>.<random>.tmp``, renamed when complete).
_TMP_SUFFIX = ".tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)

_watchers: list[Callable[[str, str], None]] = []


@contextlib.contextmanager
def watch_io(callback: Callable[[str, str], None]) -> Iterator[None]:
    """While the block runs, ``callback(op, path)`` sees every artifact read (``"read"``) and
    write (``"write"``) made through this module, from any thread (see ``stages.watch``)."""
    _watchers.append(callback)
    try:
        yield
    finally:
        _watchers.remove(callback)


def _seen(op: str, path: Path | str) -> None:
    for callback in list(_watchers):
        callback(op, str(path))


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename: readers never see half a file."""
    _seen("write", path)
    return write_store_file(path, data)


def write_store_file(path: Path | str, data: bytes) -> Path:
    """:func:`atomic_write_bytes` for a file of the runs root's store (:func:`store_file`), unseen by the
    stage watchers: it is no artifact of the stage writing it (no rule declares it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_partial_writes(directory: Path | str) -> list[Path]:
    """Delete the temp files of atomic writes a killed process left below ``directory``.

    Only safe while no live process writes there: the holder of the run lock
    (:mod:`tradingview_scraper.runlock`) calls it right after taking the lock.

    Returns
    -------
    list of Path
        The files removed.
    """
    leftovers = [p for p in Path(directory).rglob(f".*{_TMP_SUFFIX}") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def remove_artifact(path: Path | str) -> None:
    """Delete an artifact (a file, or a directory such as ``report_assets``) so its producer reruns."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def dumps_json(obj: Any) -> str:
    """Canonical JSON text of ``obj``: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"


def write_json(path: Path | str, obj: Any) -> Path:
    """Atomically write ``obj`` as canonical JSON."""
    return atomic_write_bytes(path, dumps_json(obj).encode())


def read_bytes(path: Path | str) -> bytes:
    """The bytes of an artifact (a copy's source)."""
    _seen("read", path)
    return Path(path).read_bytes()


def read_json(path: Path | str) -> Any:
    """Read a JSON artifact.

    Raises
    ------
    DataError
        The file is missing, not UTF-8 or not JSON (the message names it).
    """
    _seen("read", path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as JSON: {one_line(exc)}") from exc


#: Prefix of the project's own keys in a parquet file's schema metadata.
_META_PREFIX = "tvs."


def write_parquet(path: Path | str, frame: Any, metadata: dict[str, Any] | None = None) -> Path:
    """Atomically write a pandas DataFrame as parquet (deterministic bytes, no pandas pickle).

    ``metadata`` (JSON-able values) goes into the file's schema metadata, read back by
    :func:`read_parquet_metadata`; ``pd.read_parquet`` leaves it out of the frame, so large
    metadata costs nothing when the frame is sliced.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=True)
    if metadata:
        extra = {f"{_META_PREFIX}{k}".encode(): json.dumps(v, sort_keys=True).encode() for k, v in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return atomic_write_bytes(path, buf.getvalue())


def read_parquet(path: Path | str) -> Any:
    """Read a parquet artifact into a pandas DataFrame.

    Raises
    ------
    DataError
        The file is missing or not a readable parquet file (the message names it).
    """
    import pandas as pd

    _seen("read", path)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors name no file
        raise DataError(f"{path}: cannot read as parquet: {one_line(exc)}") from exc


def read_parquet_metadata(path: Path | str) -> dict[str, Any]:
    """The metadata :func:`write_parquet` stored with a parquet artifact (empty if none)."""
    import pyarrow.parquet as pq

    _seen("read", path)
    meta = pq.read_schema(path).metadata or {}
    prefix = _META_PREFIX.encode()
    return {k[len(prefix):].decode(): json.loads(v) for k, v in meta.items() if k.startswith(prefix)}
