"""Taskyard benchmarks: `make bench` (python -m bench)."""
