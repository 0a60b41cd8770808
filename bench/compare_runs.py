"""Compare two run directories artifact by artifact: byte for byte, except what legitimately differs.

Every file of either run is compared. Byte for byte by default: returns, weights, health,
sign tests, meta returns, weights and streams, cluster trees, flattened books, risk
contributions, rebalances, orders, the resolved manifest, the report and its figures. Two
kinds of file carry what a run cannot reproduce, and are compared without it:

* ``provenance.json`` (a computed sleeve's): where and how long its tasks ran (``mode``,
  the cluster ``address``, each task's ``node_id``, ``node_ip``, ``worker_pid``,
  ``duration_s``) and how much of its walk-forward it took from the window store
  (``windows``: windows fitted and reused, which a grown history and a run from scratch
  share nothing of). The rest (``computed``, ``run_id``, ``profile``, ``sleeve``, the tasks'
  risk profiles) must be equal.
* ``audit.jsonl`` (the ledger of each run directory): each entry's ``time``, ``cpu_s``,
  ``duration_s``, ``seq``, its ``hash`` and ``prev_hash`` (the chain over them), the
  ``git_commit`` and a file's ``stat`` (size, mtime, ctime, inode); the params that say how
  a result came about, not what it is (``windows``: the window counts, as in provenance;
  ``figures``: a report's figures drawn or reused from the report store, the same bytes either
  way); and the ``sha256`` it records of a ``provenance.json`` (see above). Entries are
  compared as a set: parallel jobs finish in any order. Everything else (stages, nodes,
  params, every artifact's sha256) must be equal.

Not compared, with the reason: ``logs/*.log`` (wall-clock times and durations on every
line) and the run's lock files (``.run.lock``, ``*.lock``: a process id or nothing).

When the two run ids differ, the second run's id is replaced by the first's in every text
file before comparing (the flattened books, the report and the ledger name their run);
give both runs the same id (and different ``--runs-root``) to compare without that.

    python bench/compare_runs.py RUN_DIR_A RUN_DIR_B

Prints one line per file that differs and a summary; exits 0 when every artifact matches,
1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Keys of a provenance record that say where and how long the tasks ran.
PLACEMENT = {"mode", "address"}
#: ... and, per task, how many walk-forward windows it fitted and took from the window store.
TASK_PLACEMENT = {"node_id", "node_ip", "worker_pid", "duration_s", "windows"}
#: Keys of a ledger entry that change from run to run whatever was computed.
LEDGER_VOLATILE = {"time", "cpu_s", "duration_s", "seq", "hash", "prev_hash", "git_commit"}
#: Keys of a ledger entry's params that say how a result came about, not what it is.
PARAMS_VOLATILE = {"windows", "figures"}
#: Files not compared, and why.
SKIPPED = {
    ".log": "log lines carry wall-clock times and durations",
    ".lock": "a lock file holds a process id or nothing",
}
TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".html", ".csv", ".txt", ".svg"}


def skipped(rel: Path) -> str | None:
    """Why file ``rel`` (relative to a run directory) is not compared, or None."""
    if rel.name == ".run.lock":
        return SKIPPED[".lock"]
    return SKIPPED.get(rel.suffix)


def _provenance(data: bytes) -> object:
    record = json.loads(data)
    tasks = {rp: {k: v for k, v in task.items() if k not in TASK_PLACEMENT} for rp, task in record.get("tasks", {}).items()}
    return {**{k: v for k, v in record.items() if k not in PLACEMENT}, "tasks": tasks}


def _file_record(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k != "stat"}
    if Path(entry.get("path", "")).name == "provenance.json":
        out.pop("sha256", None)
    return out


def _ledger(data: bytes) -> object:
    entries = []
    for line in data.decode().splitlines():
        if not line.strip():
            continue
        entry = {k: v for k, v in json.loads(line).items() if k not in LEDGER_VOLATILE}
        if isinstance(entry.get("params"), dict):
            entry["params"] = {k: v for k, v in entry["params"].items() if k not in PARAMS_VOLATILE}
        for key in ("inputs", "outputs"):
            if isinstance(entry.get(key), list):
                entry[key] = [_file_record(f) if isinstance(f, dict) else f for f in entry[key]]
        entries.append(json.dumps(entry, sort_keys=True))
    # A set: a job rerun with the same result (a record rewritten for a changed setting) adds
    # an entry equal to its first one, and the run's state is the same.
    return sorted(set(entries))


def normalized(rel: Path, data: bytes) -> tuple[object, str]:
    """What is compared of file ``rel``: its bytes, or its parsed content less what a run cannot reproduce."""
    if rel.name == "provenance.json":
        return _provenance(data), "less task placement and timing"
    if rel.name == "audit.jsonl":
        return _ledger(data), "less times, CPU, stats, hash chain, commit; entries as a set"
    return data, "bytes"


def compare(a: Path, b: Path) -> tuple[list[str], dict[str, int]]:
    """Compare run directories ``a`` and ``b``; return the lines that differ and counts per kind of match."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    id_a, id_b = a.name.encode(), b.name.encode()
    problems: list[str] = []
    counts: dict[str, int] = {}
    for rel in sorted(files_a | files_b):
        why = skipped(rel)
        if why:
            counts[f"not compared ({why})"] = counts.get(f"not compared ({why})", 0) + 1
            continue
        if rel not in files_a or rel not in files_b:
            problems.append(f"{rel}: only in {a if rel in files_a else b}")
            continue
        data_a, data_b = (a / rel).read_bytes(), (b / rel).read_bytes()
        if id_a != id_b and rel.suffix in TEXT_SUFFIXES:
            data_b = data_b.replace(id_b, id_a)
        left, how = normalized(rel, data_a)
        right, _ = normalized(rel, data_b)
        if left != right:
            problems.append(f"{rel}: differs ({how})")
        else:
            counts[f"equal ({how})"] = counts.get(f"equal ({how})", 0) + 1
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="a run directory (data/runs/<run id>)")
    p.add_argument("b", type=Path, help="the run directory to compare it with")
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not (d / "audit.jsonl").is_file():
            print(f"error: {d} is not a run directory (no audit.jsonl): give data/runs/<run id>", file=sys.stderr)
            return 2
    problems, counts = compare(args.a, args.b)
    for line in problems:
        print(line)
    for kind, n in sorted(counts.items()):
        print(f"{n:5d} files {kind}")
    verdict = "identical" if not problems else f"{len(problems)} file(s) differ"
    print(f"{args.a} vs {args.b}: {verdict}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
