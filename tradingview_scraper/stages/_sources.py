"""What a run reads from another run (a pinned sleeve, a previous run's book): verified before it is used."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .. import audit, runlock
from ..errors import DataError, PipelineError
from ..layout import Node


def check_source_run(
    run_dir: Path | str,
    files: Iterable[Path | str],
    *,
    who: str,
    hint: str,
    whole: bool = True,
    ledger_required: bool = True,
) -> None:
    """Refuse to read ``files`` of the earlier run in ``run_dir`` unless that run can be trusted.

    The run must not be reached through a symlink (nor may any of ``files`` be one), no live
    process may hold its lock (it is being written), its ledger must verify, every stage that
    failed in it must have run again successfully (it finished), and each of ``files`` must be
    an artifact its ledger records with the bytes recorded.

    Parameters
    ----------
    run_dir : path-like
        The earlier run's directory.
    files : iterable of path-like
        The files of it this run reads.
    who : str
        How the message names the source (``"previous_run 'x'"``, ``"sleeve 'a': pinned run_id 'x'"``).
    hint : str
        What to do instead, ending the message.
    whole : bool
        Check every artifact the ledger records (stat first), not only ``files``: the
        pre-flight check does, a stage re-checks only what it reads.
    ledger_required : bool
        Refuse a run without a ledger (False: such a run is read unverified, as pins of
        runs made before ledgers were).

    Raises
    ------
    DataError
        The first reason not to trust the run, in one line naming it.
    """
    run_dir = Path(run_dir)
    files = [Path(f) for f in files]
    if run_dir.is_symlink():
        raise DataError(
            f"{who}: run directory {run_dir} is a symlink (to {os.readlink(run_dir)}); runs are never followed "
            f"through links; {hint}"
        )
    for f in files:
        if f.is_symlink():
            raise DataError(f"{who}: {f} is a symlink (to {os.readlink(f)}); runs are never followed through links; {hint}")
    pid = runlock.holder(run_dir)
    if pid is not None:
        raise DataError(
            f"{who} is being written (pid {pid} holds {Node(run_dir).file('run_lock')}); wait for it to finish, "
            "or give a finished run"
        )
    if not Node(run_dir).file("audit").is_file():
        if ledger_required:
            raise DataError(
                f"{who} ({run_dir}) has no audit ledger (audit.jsonl): its files cannot be verified; {hint}"
            )
        return
    try:
        failure = audit.unfinished(run_dir)
        if failure is not None:
            raise DataError(
                f"{who} did not finish: {failure[1]} (audit seq {failure[0]}) and it never ran again successfully; {hint}"
            )
        if whole:
            damages = audit.damaged(run_dir)
            mine = {os.path.normpath(os.path.relpath(f, run_dir)) for f in files}
            damages.sort(key=lambda d: d.record.path not in mine)
            if damages:
                raise DataError(f"{who}: {damages[0].line(run_dir)}; {hint}")
            known = set(audit.recorded(run_dir))
            unknown = [f for f in files if os.path.normpath(os.path.relpath(f, run_dir)) not in known]
            if unknown:
                raise DataError(f"{who}: {unknown[0]} was not written by a stage of that run (no audit record); {hint}")
        else:
            audit.check_inputs(run_dir, files, hint=hint)
    except DataError as exc:
        if str(exc).startswith(who):
            raise
        raise DataError(f"{who}: {exc}") from None
    except PipelineError as exc:
        raise DataError(f"{who}: {exc}") from None
