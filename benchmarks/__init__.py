"""Benchmark scripts: each prints figures next to its targets. Never run as timed tests."""
