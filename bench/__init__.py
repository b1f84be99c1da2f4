"""Benchmarks and generated storage trees (see bench/README.md)."""
