"""Reading a manifest: strict JSON, schema validation, the built-in defaults."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_MANIFEST = Path("config") / "manifest.json"
#: The example manifest shipped inside the package: the default where the working
#: directory has no ``config/manifest.json`` (an installed wheel, outside a checkout).
PACKAGED_MANIFEST = Path(__file__).resolve().parent / "config" / "manifest.json"


def manifest_file(path: str | Path = DEFAULT_MANIFEST) -> Path:
    """The manifest file ``path`` names: the default falls back to the packaged example."""
    path = Path(path)
    if path == DEFAULT_MANIFEST and not path.exists():
        return PACKAGED_MANIFEST
    return path

#: Built-in defaults under the manifest's own ``defaults`` block.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "data": {"source": "skfolio", "dataset": "sp500"},
    "universe": {"direction": "LONG"},
    "selection": {"method": "all"},
    "backtest": {
        "train_window": 252,
        "test_window": 20,
        "commission": 0.0,
        "slippage": 0.0,
        "num_cpus": 1,
    },
    "health": {"min_success_ratio": 0.75, "on_unhealthy": "error", "on_parity_mismatch": "error"},
    "meta_allocation": {"min_weight": 0.05, "max_weight": 0.5},
    "profiles": ["equal_weight", "min_variance", "hrp", "risk_parity"],
}

ATOMIC_KEYS = ("data", "universe", "selection", "backtest", "health")


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: dicts merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@cache
def _schema() -> dict:
    text = resources.files("tradingview_scraper").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


def _where(path: list) -> str:
    parts = list(path)
    if len(parts) >= 2 and parts[0] == "profiles":
        rest = ".".join(str(p) for p in parts[2:])
        return f"profile {parts[1]!r}" + (f", key {rest!r}" if rest else "")
    return "key " + repr(".".join(str(p) for p in parts)) if parts else "top level"


def validate_manifest(manifest: Any, source: str = "manifest") -> dict:
    """Check ``manifest`` against the manifest JSON schema.

    Raises
    ------
    ConfigError
        One line naming the profile and key, the bad value and what would be valid.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        msg = err.message
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            msg += f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        elif err.validator == "oneOf" and err.schema is _schema()["$defs"]["sleeve"]:
            msg = "a sleeve needs exactly one of 'profile' (atomic) or 'meta_profile' (nested meta)"
        elif err.validator == "enum":
            msg = f"{err.instance!r} is not valid; valid values: {', '.join(map(str, err.validator_value))}"
        raise ConfigError(f"{source}: {_where(list(err.absolute_path))}: {msg}")
    return manifest


class _NonFinite:
    """Stands in for a NaN / Infinity / -Infinity (or overflowing) number while parsing."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _DuplicateKeys(dict):
    """An object that repeated a key (the last value won, as plain ``json.loads`` keeps it)."""

    duplicate: str = ""


def strict_json(raw: bytes | str, source: str = "manifest") -> Any:
    """``json.loads`` that refuses what plain JSON parsing lets through silently.

    ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow to infinity (``1e999``)
    are not finite JSON numbers; a key repeated within one object would silently keep its
    last value.

    Raises
    ------
    ConfigError
        One line naming the first offending key path (``profiles.meta_demo.meta_allocation.
        min_weight``) and what is wrong.
    ValueError
        The text is not JSON at all (``json.JSONDecodeError``).
    """
    seen_bad = []

    def constant(name: str) -> _NonFinite:
        seen_bad.append(name)
        return _NonFinite(name)

    def number(text: str) -> float | _NonFinite:
        value = float(text)
        if math.isfinite(value):
            return value
        seen_bad.append(text)
        return _NonFinite(text)

    def pairs(items: list[tuple[str, Any]]) -> dict:
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        seen_bad.append("duplicate")
        dup = _DuplicateKeys(obj)
        keys: set[str] = set()
        dup.duplicate = next(k for k, _ in items if k in keys or keys.add(k))
        return dup

    data = json.loads(raw, parse_constant=constant, parse_float=number, object_pairs_hook=pairs)
    if seen_bad:  # only then walk the tree, to name the first culprit in document order
        path, problem = _first_problem(data, [])
        raise ConfigError(f"{source}: key {_dotted(path)!r} {problem}")
    return data


def _first_problem(value: Any, path: list) -> tuple[list, str] | None:
    if isinstance(value, _NonFinite):
        return path, f"is {value.text}; numbers must be finite (NaN and Infinity are not JSON numbers)"
    if isinstance(value, dict):
        if isinstance(value, _DuplicateKeys):
            return [*path, value.duplicate], "appears more than once in its object; each key must be unique"
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        found = _first_problem(child, [*path, key])
        if found:
            return found
    return None


def _dotted(path: list) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_manifest(path: str | Path = DEFAULT_MANIFEST) -> tuple[dict, str]:
    """Read and validate a manifest file; return ``(manifest, sha256 of its bytes)``.

    Raises
    ------
    ConfigError
        The file is missing, is not JSON, or violates the schema.
    """
    path = manifest_file(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"manifest {str(path)!r} not found: pass an existing file (default {DEFAULT_MANIFEST})") from None
    except IsADirectoryError:
        raise ConfigError(f"manifest {str(path)!r} is a directory, not a JSON file") from None
    try:
        manifest = strict_json(raw, f"manifest {str(path)!r}")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"manifest {str(path)!r} is not valid JSON: {exc}") from None
    sha = hashlib.sha256(raw).hexdigest()
    if sha not in _VALIDATED:
        validate_manifest(manifest, source=f"manifest {str(path)!r}")
        _VALIDATED.add(sha)
    return manifest, sha


#: sha256 of manifest bytes this process has validated: the runner, then the Snakefile, load the
#: same manifest, and schema validation grows with the sleeves (docs/performance.md).
_VALIDATED: set[str] = set()
