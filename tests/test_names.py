"""One of each: how a message is folded onto one line, how the run's Ray cluster is resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradingview_scraper.errors import ConfigError, DataError, one_line
from tradingview_scraper.run import RunContext, run_cluster

from .conftest import SMALL_MANIFEST


def test_one_line_folds_an_exception_or_a_text():
    assert one_line(DataError("bad row\n  at line 3\n")) == "DataError: bad row at line 3"
    assert one_line(ValueError()) == "ValueError"
    assert one_line("a\n\n b\tc") == "a b c"


def test_a_multi_line_stage_error_is_recorded_whole(tmp_path):
    """The ledger keeps every line of a failure's message, folded (it kept the first only)."""
    from tradingview_scraper.audit import genesis, stage_audit, stage_entries

    genesis(tmp_path, run_id="r", meta_profile="p", manifest_path="m.json", manifest_sha256="0" * 64)
    with pytest.raises(DataError), stage_audit(tmp_path, "sleeve", ".", {}, [], []):
        raise DataError("prices.csv: 2 bad rows:\nrow 3: NaN\nrow 9: -1.0")
    (entry,) = stage_entries(tmp_path, "error")
    assert entry["error"] == "DataError: prices.csv: 2 bad rows: row 3: NaN row 9: -1.0"


def test_the_ray_address_and_token_are_resolved_in_one_place():
    env = {"RAY_ADDRESS": "127.0.0.1:6380", "RAY_AUTH_TOKEN_PATH": "/tmp/tok"}
    joined = run_cluster(True, None, None, environ=env)
    assert (joined.address, joined.token_path, joined.mode) == ("127.0.0.1:6380", Path("/tmp/tok"), "external")
    mine = run_cluster(True, "127.0.0.1:7000", "/tmp/mine", environ=env)
    assert (mine.address, mine.token_path) == ("127.0.0.1:7000", Path("/tmp/mine"))
    private = run_cluster(True, None, None, num_cpus=1, environ={"RAY_AUTH_TOKEN_PATH": "/tmp/tok"})
    assert (private.address, private.token_path, private.mode, private.num_cpus) == (None, None, "private", 1)
    assert run_cluster(False, "127.0.0.1:7000", None, environ=env) is None
    with pytest.raises(ConfigError, match=r"ray_address='auto' is not an explicit Ray address"):
        run_cluster(True, "auto", None, environ={})
    # The workflow's run context takes the same defaults from the same function.
    ctx = RunContext.from_config({"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "r"}, environ=env)
    assert (ctx.cluster.address, ctx.cluster.token_path) == ("127.0.0.1:6380", Path("/tmp/tok"))
