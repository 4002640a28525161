"""Research scripts behind docs/results.md; run them from the repository root as ``python -m benchmarks.NAME``."""
