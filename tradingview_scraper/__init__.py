"""Meta-portfolio pipeline: sleeves -> meta returns -> meta optimize -> flatten -> report."""

__version__ = "0.1.0"
