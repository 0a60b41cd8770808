"""Bad manifests, one mutation each, and the one-line message each must produce.

Shared by test_manifest.py (through load_plan) and test_bad_inputs.py (through the
entry point): each row is (name, mutation of the small manifest, profile, message pattern).
"""

from __future__ import annotations

import copy


def mutate(manifest, fn):
    m = copy.deepcopy(manifest)
    fn(m)
    return m


BAD = [
    ("unknown profile", lambda m: None, "nope", r"unknown profile 'nope'.*known profiles"),
    (
        "unknown sleeve profile",
        lambda m: m["profiles"]["meta_small"]["sleeves"].append({"id": "x", "profile": "ghost"}),
        "meta_small",
        r"sleeve 'x' refers to unknown profile 'ghost'",
    ),
    (
        "duplicate sleeve ids",
        lambda m: m["profiles"]["meta_small"]["sleeves"].append({"id": "tech", "profile": "energy"}),
        "meta_small",
        r"duplicate sleeve ids tech",
    ),
    (
        "infeasible min bound",
        lambda m: m["profiles"]["meta_small"].update(meta_allocation={"min_weight": 0.4}),
        "meta_small",
        r"infeasible meta_allocation: 3 sleeves x min_weight 0.4 = 1.2 > 1",
    ),
    (
        "infeasible max bound",
        lambda m: m["profiles"]["meta_small"].update(meta_allocation={"min_weight": 0.0, "max_weight": 0.3}),
        "meta_small",
        r"infeasible meta_allocation: 3 sleeves x max_weight 0.3 = 0.9 < 1",
    ),
    (
        "inverted bounds",
        lambda m: m["profiles"]["meta_small"].update(meta_allocation={"min_weight": 0.5, "max_weight": 0.2}),
        "meta_small",
        r"min_weight=0.5 exceeds max_weight=0.2",
    ),
    (
        "empty sleeves",
        lambda m: m["profiles"]["meta_small"].update(sleeves=[]),
        "meta_small",
        r"at least 2 sleeves, found 0",
    ),
    (
        "single sleeve",
        lambda m: m["profiles"]["meta_small"].update(sleeves=[{"id": "tech", "profile": "tech"}]),
        "meta_small",
        r"at least 2 sleeves, found 1",
    ),
    (
        "unknown risk profile",
        lambda m: m["profiles"]["meta_small"].update(profiles=["hrp", "moonshot"]),
        "meta_small",
        r"unknown risk profile 'moonshot'",
    ),
    (
        "unknown key",
        lambda m: m["profiles"]["tech"].update(univers={}),
        "meta_small",
        r"profile 'tech'.*'univers' was unexpected",
    ),
    (
        "negative window",
        lambda m: m["profiles"]["tech"].update(backtest={"test_window": 0}),
        "meta_small",
        r"profile 'tech', key 'backtest.test_window'",
    ),
    (
        "bad direction",
        lambda m: m["profiles"]["tech"].update(universe={"symbols": ["AAPL"], "direction": "SIDEWAYS"}),
        "meta_small",
        r"profile 'tech', key 'universe.direction': 'SIDEWAYS' is not valid; valid values: LONG, SHORT",
    ),
    (
        "self reference",
        lambda m: m["profiles"]["meta_small"]["sleeves"].append({"id": "me", "meta_profile": "meta_small"}),
        "meta_small",
        r"cycle: meta_small -> meta_small",
    ),
    (
        "window mismatch",
        lambda m: m["profiles"]["energy"].update(backtest={"train_window": 100}),
        "meta_two",
        r"sleeve 'energy': walk-forward windows train/test 100/21 differ from the meta profile's 126/21",
    ),
    (
        "parity policy on an atomic profile",
        lambda m: m["profiles"]["energy"].update(health={"on_parity_mismatch": "warn"}),
        "meta_two",
        r"profile 'energy': key 'health.on_parity_mismatch' applies to meta profiles only \(it does nothing in "
        r"atomic profile 'energy'\); remove it",
    ),
    (
        "data block on a meta profile",
        lambda m: m["profiles"]["meta_two"].update(data={"dataset": "factors"}),
        "meta_two",
        r"profile 'meta_two': key 'data' applies to atomic profiles only \(it does nothing in meta profile",
    ),
]
