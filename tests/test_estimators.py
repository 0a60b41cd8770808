"""Risk profiles as skfolio estimators and selections from installed packages (issue 22 items 2, 3).

A real run of a tiny meta profile with a ``MeanRisk(risk_measure=CVAR)`` profile: its sleeve's
and its meta node's final weights equal skfolio's own fit on the last training window, and
their walk-forward streams equal skfolio's ``cross_val_predict`` with the same ``WalkForward``;
editing the definition reruns what depends on it. The example plugin package of
``examples/`` is pip-installed into a temp target (its dist-info registers both entry
points) and runs from the real command. A plugin selection never sees a test date.
Refusals: each is one line naming the manifest key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.manifest import load_plan

from .conftest import PROJECT, SMALL_MANIFEST
from .helpers import run_script

EXAMPLE = PROJECT / "examples" / "tvs_plugin_example"
CVAR = {"name": "cvar", "estimator": "skfolio.optimization.MeanRisk", "params": {"risk_measure": "CVAR", "min_weights": 0.0}}
TRAIN, TEST = 126, 21


def _manifest(*profiles, sleeves=("tech", "staples"), **extra_profiles) -> dict:
    """The small test manifest, frictionless (streams compare with skfolio's), plus meta profile ``meta_est``."""
    m = json.loads(SMALL_MANIFEST.read_text())
    m["defaults"]["backtest"].update(commission=0.0, slippage=0.0)
    m["profiles"]["meta_est"] = {
        "sleeves": [{"id": s, "profile": s} for s in sleeves],
        "profiles": list(profiles) or ["equal_weight", CVAR],
    }
    m["profiles"].update(extra_profiles)
    return m


def _returns(symbols) -> pd.DataFrame:
    """The sleeve's returns straight from skfolio's dataset and its ``prices_to_returns``."""
    from skfolio.datasets import load_sp500_dataset
    from skfolio.preprocessing import prices_to_returns

    prices = load_sp500_dataset()[list(symbols)].loc["2019-01-01":"2021-12-31"]
    return prices_to_returns(prices)


def _mean_risk_cvar(**bounds):
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk

    return MeanRisk(risk_measure=RiskMeasure.CVAR, min_weights=0.0, **bounds)


@pytest.fixture(scope="module")
def cvar_run(tmp_path_factory):
    """One real run (in-process sleeves) of ``meta_est``: equal_weight and the cvar estimator."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    root = tmp_path_factory.mktemp("estimators")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(_manifest()))
    runs = root / "runs"
    MetaPipeline("meta_est", manifest=manifest, run_id="r", runs_root=runs, ray=False).execute()
    return manifest, runs, runs / "r"


def test_sleeve_final_weights_and_walk_forward_equal_skfolio(cvar_run):
    from skfolio.model_selection import WalkForward, cross_val_predict

    _, _, run = cvar_run
    X = _returns(["AAPL", "MSFT", "AMD"])
    record = json.loads((run / "sleeves" / "tech" / "weights_cvar.json").read_text())
    got = pd.Series({r["symbol"]: r["weight"] for r in record["weights"]}).reindex(X.columns, fill_value=0.0)
    expected = _mean_risk_cvar().fit(X.iloc[-TRAIN:]).weights_
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    assert record["estimator"]["params"] == CVAR["params"] and record["fallback"] is False

    stream = pd.read_parquet(run / "sleeves" / "tech" / "returns.parquet")["cvar"]
    pred = cross_val_predict(_mean_risk_cvar(), X, cv=WalkForward(train_size=TRAIN, test_size=TEST, reduce_test=True))
    assert len(stream) == len(pred.returns)
    np.testing.assert_allclose(stream.to_numpy(), np.asarray(pred.returns), atol=1e-10)
    health = json.loads((run / "sleeves" / "tech" / "health.json").read_text())["profiles"]["cvar"]
    assert health["windows_fallback"] == 0 and health["windows_succeeded"] == health["windows_attempted"]


def test_meta_cvar_allocates_the_sleeves_cvar_streams_with_the_same_estimator(cvar_run):
    from skfolio.model_selection import WalkForward, cross_val_predict

    _, _, run = cvar_run
    frame = pd.read_parquet(run / "meta" / "returns_cvar.parquet")
    record = json.loads((run / "meta" / "weights_cvar.json").read_text())
    assert record["estimator"]["estimator"] == CVAR["estimator"] and record["fallback"] is False
    lo, hi = record["bounds"]["min_weight"], record["bounds"]["max_weight"]
    # The node's sleeve bounds reach the estimator as its own min_weights / max_weights.
    model = _mean_risk_cvar(max_weights=hi)
    model.set_params(min_weights=lo)
    expected = model.fit(frame.iloc[-TRAIN:]).weights_
    got = np.array([record["weights"][c] for c in frame.columns])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.min() >= lo - 1e-12 and got.max() <= hi + 1e-12

    stream = pd.read_parquet(run / "meta" / "stream_cvar.parquet").iloc[:, 0]
    model = _mean_risk_cvar(max_weights=hi)
    model.set_params(min_weights=lo)
    pred = cross_val_predict(model, frame, cv=WalkForward(train_size=TRAIN, test_size=TEST, reduce_test=True))
    # The solver meets the bounds to its own tolerance; the pipeline then holds every window
    # exactly within them (a projection moving weights by far less than 1e-6).
    np.testing.assert_allclose(stream.to_numpy(), np.asarray(pred.returns), atol=1e-8)
    flat = json.loads((run / "flattened_cvar.json").read_text())
    assert abs(sum(r["weight"] for r in flat["weights"]) - 1) < 1e-12
    report = (run / "report.md").read_text()
    assert 'Method cvar (estimator skfolio.optimization.MeanRisk, params {"min_weights": 0.0, "risk_measure": "CVAR"})' in report


def test_a_definition_is_a_rerun_trigger(cvar_run):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    manifest, runs, _ = cvar_run
    kwargs = {"manifest": manifest, "run_id": "r", "runs_root": runs, "ray": False, "dry_run": True}
    assert {j.rule for j in MetaPipeline("meta_est", **kwargs).execute().jobs} <= {"all"}
    m = json.loads(manifest.read_text())
    m["profiles"]["meta_est"]["profiles"][1]["params"]["cvar_beta"] = 0.9
    edited = manifest.with_name("edited.json")
    edited.write_text(json.dumps(m))
    jobs = MetaPipeline("meta_est", **{**kwargs, "manifest": edited}).execute().jobs
    ran = {(j.rule, j.wildcards.get("profile")) for j in jobs}
    assert ("sleeve", None) in ran and ("meta_optimize", "cvar") in ran, ran


# --------------------------------------------------------------------------- the plugin package


@pytest.fixture(scope="session")
def plugin_target(tmp_path_factory) -> Path:
    """``examples/tvs_plugin_example`` pip-installed into a temp target: its package and dist-info."""
    target = tmp_path_factory.mktemp("plugin") / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (target / "tvs_plugin_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def _plugin_manifest() -> dict:
    inv_var = {"name": "inv_var", "estimator": "inverse_variance", "params": {"power": 1.0}}
    lowvol = {
        "universe": {"symbols": ["AAPL", "MSFT", "AMD", "KO", "PEP"]},
        "selection": {"method": "low_volatility", "params": {"keep": 3, "lookback": 63}},
    }
    return _manifest("equal_weight", inv_var, sleeves=("lowvol", "factors"), lowvol=lowvol)


@pytest.mark.e2e
def test_plugin_estimator_and_selection_run_from_the_installed_example(plugin_target, tmp_path):
    """The real command on its private Ray cluster: the workers import the plugin from the environment."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_plugin_manifest()))
    env = {"PYTHONPATH": f"{PROJECT}:{plugin_target}"}
    proc = run_script(PROJECT, "--profile", "meta_est", "--manifest", str(manifest), "--runs-root", str(tmp_path / "runs"),
                      "--run-id", "p", "--quiet", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    provenance = json.loads((tmp_path / "runs" / "p" / "sleeves" / "lowvol" / "provenance.json").read_text())
    assert provenance["mode"] == "private"
    run = tmp_path / "runs" / "p"

    sys.path.insert(0, str(plugin_target))
    try:
        from tvs_plugin_example import InverseVariance, low_volatility
    finally:
        sys.path.remove(str(plugin_target))
    X = _returns(["AAPL", "MSFT", "AMD", "KO", "PEP"])
    last = X.iloc[-TRAIN:]
    held = [c for c in X.columns if c in low_volatility(last, {"keep": 3, "lookback": 63})]
    record = json.loads((run / "sleeves" / "lowvol" / "weights_inv_var.json").read_text())
    got = {r["symbol"]: r["weight"] for r in record["weights"]}
    assert sorted(got) == sorted(held)
    expected = InverseVariance(power=1.0).fit(last[held]).weights_
    np.testing.assert_allclose([got[s] for s in held], expected, atol=1e-12)
    assert record["estimator"]["packages"] == ["tvs-plugin-example==0.1.0"]
    meta = json.loads((run / "meta" / "weights_inv_var.json").read_text())
    assert meta["fallback"] is False and set(meta["weights"]) == {"lowvol", "factors"}
    resolved = json.loads((run / "manifest.resolved.json").read_text())
    config = resolved["nodes"]["sleeves/lowvol"]["config"]
    assert config["selection"]["package"] == "tvs-plugin-example==0.1.0"
    assert config["estimators"]["inv_var"]["packages"] == ["tvs-plugin-example==0.1.0"]


def test_a_plugin_selection_never_sees_a_test_date(plugin_target, monkeypatch):
    """Each call sees exactly one train window; shocks after a window leave its selection and weights unchanged."""
    from tradingview_scraper import plugins
    from tradingview_scraper.backtest import walk_forward
    from tradingview_scraper.sleeve import plugin_selector

    monkeypatch.syspath_prepend(str(plugin_target))
    real = plugins.selection_function("low_volatility")
    seen: list[tuple[pd.Timestamp, pd.Timestamp, int]] = []

    def recording(train, params):
        seen.append((train.index[0], train.index[-1], len(train)))
        return real(train, params)

    monkeypatch.setattr(plugins, "selection_function", lambda method, where="": recording)
    X = _returns(["AAPL", "MSFT", "AMD", "KO", "PEP"])
    select = plugin_selector("low_volatility", {"keep": 2})
    base = walk_forward(X, "equal_weight", train_window=TRAIN, test_window=TEST, selector=select)
    starts = list(base.weights.index)
    window_calls = seen[: len(starts)]
    for (first, last, n), start in zip(window_calls, starts, strict=True):
        at = X.index.get_loc(start)
        assert n == TRAIN and last < start and (first, last) == (X.index[at - TRAIN], X.index[at - 1])

    cut = starts[len(starts) // 2]
    shocked = X.copy()
    shocked.loc[shocked.index >= cut] *= np.linspace(5.0, -5.0, len(X.columns))  # the future turned upside down
    after = walk_forward(shocked, "equal_weight", train_window=TRAIN, test_window=TEST, selector=select)
    pd.testing.assert_frame_equal(base.weights.loc[:cut], after.weights.loc[:cut])
    assert not base.weights.loc[cut:].iloc[1:].equals(after.weights.loc[cut:].iloc[1:])


def test_a_selection_answer_outside_the_window_is_one_line(monkeypatch):
    from tradingview_scraper import plugins
    from tradingview_scraper.sleeve import plugin_selector

    monkeypatch.setattr(plugins, "selection_function", lambda method, where="": lambda train, params: ["TSLA"])
    X = _returns(["AAPL", "MSFT"]).iloc[:30]
    with pytest.raises(DataError, match=r"selection 'bad' on the window trained up to .*'TSLA'.*AAPL, MSFT"):
        plugin_selector("bad", {})(X)


# --------------------------------------------------------------------------- refusals

_REFUSED = [
    ({**CVAR, "params": {"risk_measure": "CVARR"}},
     r"profiles\[1\] \('cvar'\)\.params\.risk_measure: 'CVARR' is not a member of RiskMeasure; valid: VARIANCE"),
    ({**CVAR, "params": {"risk_mesure": "CVAR"}},
     r"profiles\[1\] \('cvar'\)\.params: skfolio.optimization.MeanRisk has no parameter 'risk_mesure'; valid: .*risk_measure"),
    ({"name": "cvar", "estimator": "skfolio.optimization.ObjectiveFunction"},
     r"profiles\[1\] \('cvar'\)\.estimator: 'skfolio.optimization.ObjectiveFunction' is not an estimator class"),
    ({"name": "cvar", "estimator": "skfolio.optimization.BaseOptimization"}, r"is not an estimator class"),
    ({"name": "cvar", "estimator": "os.system"},
     r"estimator 'os.system' is neither a class of skfolio.optimization nor registered under the entry-point group "
     r"tradingview_scraper.estimators .*never imports"),
    ({"name": "cvar", "estimator": "skfolio.prior.EmpiricalPrior"},
     r"'skfolio.prior.EmpiricalPrior' is refused: a risk profile estimator is a class of skfolio.optimization"),
    ({"name": "cvar", "estimator": "skfolio.optimization.MeanRisk",
      "params": {"prior_estimator": {"estimator": "subprocess.Popen"}}},
     r"params\.prior_estimator\.estimator: estimator 'subprocess.Popen' is neither a class of skfolio.optimization / skfolio.prior"),
    ({"name": "cvar", "estimator": "skfolio.optimization.MeanRisk",
      "params": {"prior_estimator": {"estimator": "skfolio.prior.EmpiricalPrior", "params": {"covariance_estimator":
                 {"estimator": "skfolio.moments.LedoitWolf", "params": {"shrinkage": 1}}}}}},
     r"params\.prior_estimator\.params\.covariance_estimator\.params: skfolio.moments.LedoitWolf has no parameter 'shrinkage'"),
    ({"name": "hrp", "estimator": "skfolio.optimization.MeanRisk"}, r"name 'hrp' is a built-in risk profile"),
    ({"name": "CVaR", "estimator": "skfolio.optimization.MeanRisk"}, r"key 'profiles.1.name': 'CVaR' does not match"),
    ({"name": "cvar", "estimator": "skfolio.optimization.MeanRisk", "prams": {}}, r"key 'profiles.1': Additional properties .*'prams' was unexpected"),
]


@pytest.mark.parametrize(("definition", "message"), _REFUSED)
def test_bad_definitions_are_one_line_config_errors(write_manifest, definition, message):
    path = write_manifest(_manifest("equal_weight", definition))
    with pytest.raises(ConfigError, match=message) as info:
        load_plan("meta_est", path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_nested_definitions_must_agree_and_selections_must_be_registered(write_manifest):
    other = {**CVAR, "params": {"risk_measure": "CDAR"}}
    m = _manifest()
    m["profiles"]["inner"] = {"sleeves": [{"id": "a", "profile": "tech"}, {"id": "b", "profile": "energy"}],
                              "profiles": ["equal_weight", other]}  # fmt: skip
    m["profiles"]["meta_est"]["sleeves"].append({"id": "inner", "meta_profile": "inner"})
    with pytest.raises(ConfigError, match=r"profile 'inner': risk profile 'cvar' is defined otherwise"):
        load_plan("meta_est", write_manifest(m))
    m["profiles"]["inner"]["profiles"] = ["equal_weight", CVAR]
    plan = load_plan("meta_est", write_manifest(m))
    assert plan.nodes["sleeves/inner/sleeves/b"].config["estimators"]["cvar"]["params"] == CVAR["params"]

    m = _manifest(staples={"universe": {"symbols": ["KO", "PEP", "PG"]}, "selection": {"method": "no_such_rule"}})
    with pytest.raises(ConfigError, match=r"profile 'staples': selection.method: unknown selection method 'no_such_rule'; "
                                          r"valid: all, momentum.*tradingview_scraper.selections"):  # fmt: skip
        load_plan("meta_est", write_manifest(m))
    m = _manifest(staples={"universe": {"symbols": ["KO", "PEP", "PG"]}, "selection": {"method": "all", "params": {}}})
    with pytest.raises(ConfigError, match=r"selection.params applies to registered selections only"):
        load_plan("meta_est", write_manifest(m))


def test_the_command_refuses_a_bad_definition_in_one_line_exit_2(write_manifest, tmp_path, capfd):
    from tradingview_scraper.orchestration.cli import main

    path = write_manifest(_manifest("equal_weight", {**CVAR, "params": {"risk_measure": "CVARR"}}))
    argv = ["--profile", "meta_est", "--manifest", str(path), "--runs-root", str(tmp_path / "runs"), "--no-ray"]
    capfd.readouterr()
    try:
        code = main(argv, prog="run_meta_pipeline.py", require_meta=True)
    except SystemExit as exc:
        code = exc.code
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'CVARR' is not a member of RiskMeasure" in err[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_shipped_profiles_carry_no_definitions():
    """Built-in profiles keep their configs (and so their rule params and artifacts) as they were."""
    plan = load_plan("meta_small", SMALL_MANIFEST)
    assert all("estimators" not in n.config for n in plan.nodes.values())


# --------------------------------------------------------------------------- the engine


def test_an_estimator_profile_meets_the_built_in_engine_and_falls_back_like_it():
    """MeanRisk minimizing variance as a definition gives the built-in min_variance walk-forward; an
    infeasible one falls back to equal weight on every window, counted, with skfolio's reason."""
    from tradingview_scraper.backtest import walk_forward
    from tradingview_scraper.plugins import estimator_definition

    X = _returns(["AAPL", "MSFT", "AMD", "KO"])
    minvar = estimator_definition({"name": "mv", "estimator": "skfolio.optimization.MeanRisk"}, "test")
    custom = walk_forward(X, "mv", train_window=TRAIN, test_window=TEST, cost_rate=0.001, estimator=minvar)
    built_in = walk_forward(X, "min_variance", train_window=TRAIN, test_window=TEST, cost_rate=0.001)
    np.testing.assert_allclose(custom.weights.to_numpy(), built_in.weights.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(custom.final_weights.to_numpy(), built_in.final_weights.to_numpy(), atol=1e-6)
    assert custom.windows_succeeded == custom.windows_attempted == built_in.windows_attempted

    tight = estimator_definition(
        {"name": "tight", "estimator": "skfolio.optimization.MeanRisk", "params": {"min_weights": 0.5}}, "test"
    )
    res = walk_forward(X, "tight", train_window=TRAIN, test_window=TEST, estimator=tight)
    assert res.windows_fallback == res.windows_attempted > 0 and res.windows_succeeded == 0
    np.testing.assert_allclose(res.weights.to_numpy(), 0.25, atol=1e-15)
    assert res.final_fallback and "OptimizationError" in res.final_error
