"""The "Fast and wide" benchmark: lag, upstream calls, width and pass-through overhead.

Run it with `bash bench/run.sh` (or `python -m bench`) from the repository root;
see docs/benchmarks.md for what it measures and the last results.
"""
