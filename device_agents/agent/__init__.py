"""hilt on-board agent: a leaf package, standard library only, Python >= 3.9.

It is packed into one hash-named zipapp (`pack.py`) that every transport copies to a board and runs
(`python3 agent-<hash>.pyz --cache DIR`). It serves requests from the host: board facts (`hello`),
content-addressed storage (`put`, `has`, `install`), benchmarks through the native `hilt-runner`
with power sampled in parallel and an on-board lock (`bench`), and `shutdown`.

Modules: `wire` (codecs, constants, file and tree hashes), `store`, `facts`, `power/` (one file
per power reader), `lock`, `bench`, `serve` (dispatch, serving loops, `main`), `pack` (zipapp).

Layering: this package imports nothing from hilt (only relative imports and the standard
library), so every layer may import it; the host takes the wire format and the bundle/runtime
tree hash from `device_agents.agent.wire`, which keeps them defined once. Keep this file empty of
imports: importing `wire` from `harness` must not pull anything else in.
"""
