"""Benchmarks: `python -m benchmarks` (see `benchmarks.suite.run` for the Python API)."""
