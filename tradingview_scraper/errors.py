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


class StageError(PipelineError):
    """A stage failed on an error that is not the pipeline's own; the message names the stage and node."""


class SleeveError(PipelineError):
    """A sleeve's computation failed; the message names the sleeve."""


class ConservationError(PipelineError):
    """Flattened weights do not conserve the meta allocation."""


class RunInProgressError(PipelineError):
    """Another live process holds the run directory."""


def one_line(exc: BaseException) -> str:
    """``"<Type>: <message>"`` of an exception, its message folded onto one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
