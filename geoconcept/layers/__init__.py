"""Geographic layers sampled at arrays of GPS points.

`registry` (the built-in layers + user layers from a YAML config) is the entry point; `grid` and
`builtin` hold the rasters, `vector` polygon files, `coast` and `places` the derived layers,
`neighbourhood` soft labels over a disc, `summary` and `maps` metadata and map PNGs.
"""
