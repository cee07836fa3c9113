"""Tooling beside the run path: benchmarks, golden checks, key manifests, tiny weights. Nothing on the run path imports it."""
