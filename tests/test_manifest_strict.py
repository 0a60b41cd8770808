"""NaN, Infinity and duplicate keys in the manifest: refused at the door by the real script.

Each case runs ``scripts/run_meta_pipeline.py`` as a subprocess: exit code 2, one stderr
line naming the key path, and no run directory (nor runs root) created.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tradingview_scraper.errors import ConfigError
from tradingview_scraper.manifest import load_manifest

from .conftest import PROJECT, SMALL_MANIFEST

PROG = "run_meta_pipeline.py"


def _with(path: list, value) -> str:
    """The small manifest with ``value`` set at ``path``, serialized as Python's json writes NaN/Infinity."""
    m = json.loads(SMALL_MANIFEST.read_text())
    node = m
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return json.dumps(m)


def _duplicate(path: list, first, second) -> str:
    """The small manifest where the object at ``path[:-1]`` holds key ``path[-1]`` twice."""
    marker = "__dup_marker__"
    text = _with(path[:-1] + [marker], first)
    return text.replace(f'"{marker}": {json.dumps(first)}', f'"{path[-1]}": {json.dumps(first)}, "{path[-1]}": {json.dumps(second)}')


CASES = [
    ("NaN min_weight", _with(["profiles", "meta_small", "meta_allocation", "min_weight"], float("nan")),
     r"key 'profiles\.meta_small\.meta_allocation\.min_weight' is NaN"),
    ("NaN commission", _with(["defaults", "backtest", "commission"], float("nan")),
     r"key 'defaults\.backtest\.commission' is NaN"),
    ("Infinity max_weight", _with(["profiles", "meta_small", "meta_allocation", "max_weight"], float("inf")),
     r"key 'profiles\.meta_small\.meta_allocation\.max_weight' is Infinity"),
    ("-Infinity slippage", _with(["profiles", "tech", "backtest", "slippage"], float("-inf")),
     r"key 'profiles\.tech\.backtest\.slippage' is -Infinity"),
    ("overflowing number", _with(["profiles", "tech", "backtest", "commission"], 0.123).replace(
        '"commission": 0.123', '"commission": 1e999'), r"key 'profiles\.tech\.backtest\.commission' is 1e999"),
    ("NaN in a list", _with(["profiles", "meta_small", "sleeves"], [{"id": "tech", "profile": "tech"}, float("nan")]),
     r"key 'profiles\.meta_small\.sleeves\[1\]' is NaN"),
    ("duplicate bound", _duplicate(["profiles", "meta_small", "meta_allocation", "min_weight"], 0.1, 0.2),
     r"key 'profiles\.meta_small\.meta_allocation\.min_weight' appears more than once"),
    ("duplicate profile", _duplicate(["profiles", "tech"], {"universe": {"symbols": ["AAPL"]}}, {}),
     r"key 'profiles\.tech' appears more than once"),
    ("duplicate top-level key", _duplicate(["defaults"], {}, {"backtest": {"train_window": 60}}),
     r"key 'defaults' appears more than once"),
]  # fmt: skip


@pytest.mark.parametrize("text, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_json_is_refused_in_one_line_before_any_work(text, needle, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(text)
    runs = tmp_path / "runs"
    argv = ["--profile", "meta_small", "--manifest", str(manifest), "--runs-root", str(runs), "--run-id", "r", "--no-ray"]
    proc = subprocess.run([sys.executable, f"scripts/{PROG}", *argv], cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{PROG}: error: manifest "), lines[0]
    assert re.search(needle, lines[0]), lines[0]
    assert not runs.exists(), "a refused run creates no run directory"
    assert proc.stdout == ""


def test_the_control_manifest_passes_the_strict_parser():
    manifest, _ = load_manifest(SMALL_MANIFEST)
    assert "meta_small" in manifest["profiles"]


@pytest.mark.parametrize("text, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_manifest_names_the_key(text, needle, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_manifest(path)
