"""Exception classes of the pipeline: every error names its culprit and what would be valid."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """The manifest, the workflow config or a command-line option is invalid."""


class DataError(PipelineError):
    """Input data (prices, returns, a pinned run's artifacts) is missing or malformed."""


class OptimizationError(PipelineError):
    """An optimizer failed where no fallback is allowed."""


class SleeveError(PipelineError):
    """A sleeve's computation failed; the message names the sleeve."""


class ConservationError(PipelineError):
    """Flattened weights do not conserve the meta allocation."""


class RunInProgressError(PipelineError):
    """Another live process holds the run directory."""
