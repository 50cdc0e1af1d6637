"""Benchmarks: `python -m pytest bench/benchmarks --benchmark-only -s` (the -s shows the side-by-side tables)."""
