"""Meta-portfolio pipeline: sleeves -> meta returns -> meta optimize -> flatten -> report.

The public API is re-exported here. Names load on first use (PEP 562), so that importing
the package, as the Snakefile does on every parse, stays free of pandas, skfolio and Ray.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "run_plan": "api",
    "run_pipeline": "api",
    "PlanResult": "api",
    "NodeResult": "api",
    "load_plan": "manifest",
    "load_manifest": "manifest",
    "Plan": "manifest",
    "MetaPipeline": "orchestration.pipeline",
    "RunResult": "orchestration.pipeline",
    "compute_sleeve": "sleeve",
    "meta_returns": "meta",
    "meta_optimize": "meta",
    "flatten": "flattening",
    "PipelineError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "SleeveError": "errors",
    "MetaError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tradingview_scraper' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
