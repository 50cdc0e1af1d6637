"""Benchmarks: `python -m pytest bench/ --benchmark-only -s` (the -s shows the side-by-side tables)."""
