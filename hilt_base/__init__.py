"""Stdlib-only foundations below every hilt package, and below the on-board agent.

`hashing` is the one definition of the file and tree hash: the host (caches, bundles, runtimes) and
the agent (packed into its zipapp by `device_agents.agent.pack`) import it from here, so neither
side reaches into the other. `errors` is the root of hilt's exception hierarchy, so `profiles` can
raise the same `ConfigError` as `harness` without importing it. Python >= 3.9 (the agent's floor).
"""
