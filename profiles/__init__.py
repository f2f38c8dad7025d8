"""Board profiles: one TOML file per board kind beside this file, and their schema (`profiles.schema`).

The lowest layer of hilt: every other package may read profiles; this one imports only `harness.errors`.
"""
