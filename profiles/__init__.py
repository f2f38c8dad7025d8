"""Board profiles: one TOML file per board kind beside this file, and their schema (`profiles.schema`).

Near the bottom of hilt: every other package may read profiles; this one imports nothing of hilt but
the stdlib-only `hilt_base` (its `ConfigError` is the one `harness.errors` re-exports).
"""
