"""Benchmarks: `python -m pytest bench/benchmarks --benchmark-only -s` (the -s shows the side-by-side
tables). Each times the work it reports through pytest-benchmark (the `timed` fixture: one round of
the measured side) and asserts its target ratio against a baseline run in the same test."""

import time

import pytest


@pytest.fixture
def timed(benchmark):
    """timed(fn) runs fn once as the benchmark's measured work: (its result, wall seconds)."""
    def run(fn):
        start = time.perf_counter()
        result = benchmark.pedantic(fn, rounds=1, iterations=1)
        return result, time.perf_counter() - start
    return run
