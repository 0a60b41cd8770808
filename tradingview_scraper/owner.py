"""The one owner of a run in the workflow's main process: its directory, its lock, its record, its verdict.

Whichever entry point starts a run (the runner, or the plain ``snakemake`` command), one
:class:`RunOwner` per run directory and process decides what the run may touch. It refuses a
directory the run does not own (a symlink, a folder that is not this run's), and only when
jobs will really execute does it claim the directory: create it, take the run's lock, remove
the temp files a killed writer left, and discard artifacts that no longer match their ledger
records. A dry run, ``--lint``, ``--report`` or a parse of the workflow never claims: they
create, change and delete nothing. At the end it gives the run's verdict, retires the
artifacts the run no longer produces and releases the lock (a directory it created and that
holds nothing else goes with it).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from . import audit, runlock
from .errors import ConfigError, PipelineError
from .layout import Node, refuse_symlink

#: Files a run directory may hold before its ledger exists: the locks and the stage logs
#: (a run killed before its first stage recorded anything).
_BEFORE_LEDGER = re.compile(r"^(\.run\.lock|audit\.jsonl\.lock|(.*/)?logs/[^/]+\.log)$")

_owners: dict[str, RunOwner] = {}
_owners_guard = threading.Lock()


def owner_of(run_dir: Path | str, run_id: str, *, new: bool = False) -> tuple[RunOwner, bool]:
    """The owner of ``run_dir`` in this process, and whether this call created it.

    The runner creates the owner (``new``) before Snakemake starts; the workflow it drives
    in the same process finds it here (keyed by the run directory, like the run's lock).
    """
    key = os.path.abspath(run_dir)
    with _owners_guard:
        owner = _owners.get(key)
        if owner is not None and not new and owner.run_id == run_id:
            return owner, False
        owner = _owners[key] = RunOwner(Path(run_dir), run_id)
        return owner, True


class RunOwner:
    """What a run may touch, decided once per run directory and process.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    run_id : str
        The run's id (a directory holding another run's ledger is not this run's).
    """

    def __init__(self, run_dir: Path, run_id: str) -> None:
        self.run_dir, self.run_id = Path(run_dir), run_id
        self.claimed = False
        self.created = False
        self.start_seq = -1
        self._guard = threading.Lock()

    # ----------------------------------------------------------------- before any work

    def check(self) -> None:
        """Refuse a run directory this run does not own; read only, creates nothing.

        Raises
        ------
        ConfigError
            The run directory is a symlink, or it exists and is not this run's: it holds
            another run's ledger, or files but no ledger (a user's folder, or a run whose
            ledger was removed: nothing in it can be verified).
        """
        run_dir = refuse_symlink(self.run_dir, "run directory")
        if not run_dir.is_dir():
            if run_dir.exists():
                raise ConfigError(f"run directory {run_dir} is a file; choose another run id")
            return
        if runlock.holder(run_dir) is not None:
            return  # a live run holds it: claiming it is refused as "in progress", a dry run may look
        ledger = Node(run_dir).file("audit")
        if ledger.is_file() and ledger.stat().st_size > 0:
            first = audit.genesis_of(run_dir)
            if first is None:
                raise ConfigError(
                    f"{ledger} does not start with a genesis entry: {run_dir} is not a run directory of this pipeline; "
                    "choose another run id"
                )
            if first.get("run_id") != self.run_id:
                raise ConfigError(
                    f"run directory {run_dir} holds the ledger of run {first.get('run_id')!r}, not {self.run_id!r}; "
                    "choose another run id (a run directory is never renamed or reused)"
                )
            return
        stray = [
            rel
            for p in sorted(run_dir.rglob("*"))
            if (p.is_file() or p.is_symlink()) and not _BEFORE_LEDGER.match(rel := p.relative_to(run_dir).as_posix())
        ]
        if stray:
            raise ConfigError(
                f"{run_dir} holds files ({stray[0]}, ...) but no audit ledger (audit.jsonl): they cannot be verified "
                "and are not this run's; remove the directory or choose another run id"
            )

    def claim(self, *, repair: bool = True, stream=None) -> list[str]:
        """Own the run directory for a run whose jobs will execute (idempotent).

        Checks it (:meth:`check`), creates it if missing, takes the run's lock (which removes
        the temp files a killed writer left) and, with ``repair``, deletes every artifact whose
        bytes differ from its ledger record together with what was computed from it, one line
        each on ``stream`` (default stderr), so that chain reruns. Call it before the DAG is
        built: Snakemake plans reruns from the files it sees then.

        Returns
        -------
        list of str
            The lines printed.

        Raises
        ------
        RunInProgressError
            Another live process holds the run's lock.
        ConfigError
            The directory is not this run's (see :meth:`check`).
        PipelineError
            The ledger does not verify: nothing in the run can be trusted.
        """
        import sys

        with self._guard:
            if self.claimed:
                return []
            self.check()
            existed = self.run_dir.exists()
            runlock.acquire(self.run_dir, self.run_id)
            self.claimed, self.created = True, not existed
            try:
                damages = audit.damaged(self.run_dir) if repair else []
                audit.discard(self.run_dir, damages)
            except BaseException:
                self._release()
                raise
            self.start_seq = audit.last_seq(self.run_dir)  # failures after it are this run's
        lines = [f"{d.line(self.run_dir)}: discarded with what was computed from it; recomputing" for d in damages]
        for line in lines:
            print(line, file=stream or sys.stderr, flush=True)
        return lines

    # ----------------------------------------------------------------- at the end

    def verdict(self) -> PipelineError | None:
        """The error a successful run still ends with: the first artifact that no longer matches its record."""
        left = audit.damaged(self.run_dir)
        if left:
            return PipelineError(f"{left[0].line(self.run_dir)}; rerun the same command to recompute it")
        return None

    def retire(self, produced: Iterable[str]) -> list[str]:
        """Delete the recorded artifacts no job of this run produces any more, and record that.

        An earlier invocation of the same run id may have written files this one does not
        (``rebalance_<p>.json`` once the book is dropped, a risk profile no longer asked for):
        they are the run's own, and left in place they would read as current. ``produced``
        holds every output path of the run's complete DAG (files, or directories whose files
        count as produced).

        Returns
        -------
        list of str
            The paths retired, relative to the run directory.
        """
        root = Path(os.path.abspath(self.run_dir))
        outputs = {os.path.abspath(p) for p in produced}
        stale = []
        for rel in audit.recorded(self.run_dir):
            full = root / rel
            if not any(str(p) in outputs for p in (full, *full.parents[: len(Path(rel).parts) - 1])):
                stale.append(rel)
        return audit.retire(self.run_dir, stale, "no longer produced by this run")

    def release(self) -> None:
        """Release the lock :meth:`claim` took; a directory the claim created goes too when it holds nothing else."""
        with self._guard:
            self._release()

    def _release(self) -> None:
        if self.claimed:
            self.claimed = False
            runlock.release(self.run_dir, discard_empty=self.created)
        with _owners_guard:
            if _owners.get(os.path.abspath(self.run_dir)) is self:
                del _owners[os.path.abspath(self.run_dir)]
