"""Shared fixtures: the small test manifest and a runner for real workflow runs in tmp dirs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SMALL_MANIFEST = PROJECT / "tests" / "data" / "manifest_small.json"


@pytest.fixture(autouse=True)
def _project_cwd(monkeypatch):
    """Tests run from the project root, as a user would."""
    monkeypatch.chdir(PROJECT)


@pytest.fixture
def small_manifest() -> Path:
    return SMALL_MANIFEST


@pytest.fixture
def write_manifest(tmp_path):
    """Write a manifest dict to a file and return its path."""

    def _write(manifest: dict, name: str = "manifest.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(manifest, indent=2))
        return path

    return _write


@pytest.fixture
def small_manifest_dict() -> dict:
    return json.loads(SMALL_MANIFEST.read_text())


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


def pytest_configure(config):
    # Ray and Snakemake must never reach beyond loopback in tests.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


#: The long files, collected first: under ``make test`` (xdist workers, ``--dist loadfile``,
#: files in this order, each worker holding two) the short files fill the end evenly. Files
#: that mostly wait (a SLURM queue, Ray's agents after a killed driver) alternate with files
#: that compute (the engine's windows, runs one after another), so that the waits of one
#: worker meet the work of another.
FIRST = ("test_slurm", "test_engine_equivalence", "test_ray_pipeline", "test_rerun_triggers", "test_cluster",
         "test_reliability", "test_refusals")


def pytest_collection_modifyitems(config, items):
    """The long, waiting files first (a stable sort: each file's own order is kept)."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(FIRST)))


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """The directory ``build(directory)`` fills, built once per test session and shared by its workers.

    Under pytest-xdist every worker is a process of its own, so a session fixture would be
    built once per worker; the workers share the session's base temp dir instead: the first
    to take the lock builds, the others wait on the lock (not on a clock) and read the result.
    A build that raises leaves no mark, so the next worker builds again and fails the same way.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    directory = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    built = Path(f"{directory}.built")  # beside the build, not in it: a copy of the runs root holds runs only
    with open(f"{directory}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not built.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            built.touch()
    return directory


def _own_copy(tmp_path_factory, shared: Path, name: str) -> Path:
    """A copy of a shared build for one worker's tests to add runs to (mtimes kept, links as links)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return shared
    own = tmp_path_factory.mktemp(name)
    shutil.copytree(shared, own, symlinks=True, dirs_exist_ok=True)
    return own


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One real run of ``meta_small`` (in-process, no Ray), run id ``rep``: read-only for its tests."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    def build(root: Path) -> None:
        MetaPipeline("meta_small", manifest=SMALL_MANIFEST, run_id="rep", runs_root=root, ray=False).execute()

    return _built_once(tmp_path_factory, "small", build) / "rep"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One real run of the shipped ``meta_demo`` (in-process, no Ray), run id ``demo-local``: read-only."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    def build(root: Path) -> None:
        MetaPipeline("meta_demo", run_id="demo-local", runs_root=root, ray=False).execute()

    return _built_once(tmp_path_factory, "demo", build) / "demo-local"


@pytest.fixture(scope="session")
def pm_runs(tmp_path_factory):
    """Two real runs of ``meta_small``: ``prev`` on data to mid-2021, ``now`` on the full data with
    ``previous_run="prev"`` (so its weights differ and it carries rebalance and change artifacts).

    The two runs are computed once per session; each worker gets its own copy of their runs root,
    as its tests add runs of their own next to them."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    def build(base: Path) -> None:
        root = base / "runs"
        manifest = json.loads(SMALL_MANIFEST.read_text())
        manifest["defaults"]["data"]["end"] = "2021-06-30"
        earlier = base / "manifest_earlier.json"
        earlier.write_text(json.dumps(manifest))
        MetaPipeline("meta_small", manifest=earlier, run_id="prev", runs_root=root, ray=False).execute()
        MetaPipeline(
            "meta_small", manifest=SMALL_MANIFEST, run_id="now", runs_root=root, ray=False, previous_run="prev"
        ).execute()

    root = _own_copy(tmp_path_factory, _built_once(tmp_path_factory, "pm", build), "pm") / "runs"
    return {"root": root, "prev": root / "prev", "now": root / "now"}
