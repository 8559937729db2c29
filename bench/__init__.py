"""Benchmarks: what Doow promises, each beside the physical limit measured on the same machine in
the same run. Run with `make bench` (all of them) or `python -m bench ingest detail --quick`.

Not part of the test suite; tests/bench/test_bench_smoke.py runs every code path at a tiny size.
"""
