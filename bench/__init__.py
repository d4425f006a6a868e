"""Omnikube's benchmarks: `python -m bench` (or `make bench`) runs them all and writes
`docs/benchmarks.md`.

One module per benchmark, each exposing `run(ctx) -> Section`; shared plumbing in `procs.py`
(processes on loopback, CPU and memory from /proc), `stats.py` (percentiles) and `report.py`
(the Markdown). Benchmarks measure and report; they never assert a timing, and `make test` never
runs them.
"""
