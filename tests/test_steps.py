"""One kind of step: the meta returns and the report go through the one adapter like every other step."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper import audit, stages, steps
from tradingview_scraper.errors import SleeveError
from tradingview_scraper.layout import read_parquet_metadata, write_json, write_parquet
from tradingview_scraper.rule_inputs import step_inputs
from tradingview_scraper.run import RunContext

from .conftest import SMALL_MANIFEST

SLEEVES = ("tech", "staples", "factors")


def _children(ctx: RunContext, health=None) -> None:
    """Each child of ``meta_small``'s root: a returns file (its weekends on the first sleeve only), a health record and a sign test."""
    profiles = ctx.plan.risk_profiles
    rng = np.random.default_rng(7)
    for i, sid in enumerate(SLEEVES):
        node = ctx.root.child(sid)
        idx = pd.date_range("2020-01-01", periods=420, freq="D" if i == 0 else "B", name="date")
        write_parquet(node.file("returns"), pd.DataFrame(rng.normal(0, 0.01, (len(idx), len(profiles))), index=idx, columns=profiles))
        record = {"profiles": {p: {"windows_attempted": 4, "windows_succeeded": 4} for p in profiles}}
        write_json(node.file("health"), (health or {}).get(sid, record))
        write_json(node.file("sign_test"), {"passed": True})


def _meta_returns(ctx: RunContext) -> dict:
    outputs = {"returns": [str(ctx.root.file("meta_returns", profile=p)) for p in ctx.plan.risk_profiles]}
    stages.run_step(steps.step("meta_returns"), ctx, ".", input=step_inputs(ctx, "meta_returns", "."), output=outputs)
    return outputs


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    config = {"profile": "meta_small", "manifest": str(SMALL_MANIFEST), "run_id": "s", "runs_root": str(tmp_path), "ray": False}
    return RunContext.from_config(config, environ={})


def test_the_meta_returns_step_writes_its_metadata_through_the_adapter_and_the_report_reads_it_back(ctx, tmp_path):
    """``steps.Parquet`` out of a step is the file ``layout.write_parquet`` writes with that metadata,
    byte for byte; an ``Own(..., metadata=True)`` input comes back as the same frame and metadata; the
    ledger entry keeps the params the step always recorded."""
    from tradingview_scraper.compose import aligned
    from tradingview_scraper.stages._step import _loaded

    _children(ctx)
    outputs = _meta_returns(ctx)
    frames = {sid: pd.read_parquet(ctx.root.child(sid).file("returns")) for sid in SLEEVES}
    for profile, path in zip(ctx.plan.risk_profiles, outputs["returns"], strict=True):
        frame, calendar = aligned(ctx.spec("."), frames, profile)
        write_parquet(tmp_path / "expected.parquet", frame, metadata={"calendar": calendar})
        assert open(path, "rb").read() == (tmp_path / "expected.parquet").read_bytes(), profile
        back = _loaded(steps.step("report").inputs["meta_returns"], path)
        assert isinstance(back, steps.Parquet) and back.metadata == read_parquet_metadata(path) == {"calendar": calendar}
        pd.testing.assert_frame_equal(back.frame, frame, check_freq=False)
    (entry,) = [e for e in audit.stage_entries(ctx.run_dir, "success") if e["stage"] == "meta_returns"]
    assert set(entry["params"]) == {"profiles", "common_dates", "compounded_periods"}
    assert entry["params"]["compounded_periods"]["tech"] > 0 and entry["params"]["common_dates"] == len(frame)


def test_the_meta_returns_gate_names_the_childs_file_and_stops_before_any_output(ctx):
    profiles = ctx.plan.risk_profiles
    sick = {"profiles": {p: {"windows_attempted": 4, "windows_succeeded": 1 if p == "hrp" else 4} for p in profiles}}
    _children(ctx, health={"staples": sick})
    where = json.dumps(str(ctx.root.child("staples").file("health")))[1:-1]
    with pytest.raises(SleeveError, match=rf"^sleeve 'staples' is unhealthy: hrp \(1/4 windows succeeded\) in {where}; "):
        _meta_returns(ctx)
    assert not any(ctx.root.file("meta_returns", profile=p).exists() for p in profiles)


def test_a_ledger_function_with_a_comprehension_gives_its_rule_the_same_code_trigger_in_every_process():
    """A nested code object's repr holds its address: hashed by its content, the trigger is stable across processes."""
    import subprocess
    import sys

    probe = (
        "from tradingview_scraper import steps\n"
        "e = steps.Step('x', 'a:b', ledger=lambda job: {'p': [q for q in job.profiles]})\n"
        "print(steps._entry_digest(e))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and "code object" not in runs[0]
