"""Where hilt keeps what it builds itself (demo data, demo models, runtimes): see `harness.cache`."""

from harness.cache import cache_root

__all__ = ["cache_root"]
