"""Research scripts behind BENCHMARKS.md; run them from the repository root as ``python -m benchmarks.NAME``."""
