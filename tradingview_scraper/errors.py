"""Exception classes of the pipeline: every error names its culprit and what would be valid."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """The manifest, the workflow config or a command-line option is invalid."""


class DataError(PipelineError):
    """Input data (prices, returns, a pinned run's artifacts) is missing or malformed."""


class OptimizationError(PipelineError):
    """An optimizer's result is unusable (weights that are not a full, finite allocation).

    The walk-forward catches it like any failed fit: the window falls back to equal weight
    and its health record names the error.
    """


class LimitsError(OptimizationError):
    """No allocation within a meta node's sleeve bounds meets its book limits (``meta_allocation.book``).

    In a walk-forward window it falls back like any failed fit and is counted; on the live
    allocation it stops the node.
    """


class StageError(PipelineError):
    """A stage failed on an error that is not the pipeline's own; the message names the stage and node."""


class SleeveError(PipelineError):
    """An atomic sleeve failed (its computation, its health, its sign test); the message names the sleeve."""


class MetaError(PipelineError):
    """A meta node failed (its health on its meta walk-forward, its optimization); the message names the node."""


class ConservationError(PipelineError):
    """Flattened weights do not conserve the meta allocation."""


class RunInProgressError(PipelineError):
    """Another live process holds the run directory."""


def one_line(value: BaseException | str) -> str:
    """``value`` folded onto one line: every run of whitespace, line breaks included, becomes one space.

    Parameters
    ----------
    value : BaseException or str
        An exception, shown as ``"<Type>: <message>"`` (``"<Type>"`` when its message is
        empty), or a text, shown as it is.

    Returns
    -------
    str
        The one line; what every error message, ledger record and console line of the
        pipeline uses to show a message it did not write itself.
    """
    text = " ".join(str(value).split())
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {text}" if text else type(value).__name__
    return text
