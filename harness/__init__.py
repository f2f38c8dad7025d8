"""hilt's host-side model work: loading, pruning, SIA, evaluation, compilation."""

__version__ = "0.1.0"
