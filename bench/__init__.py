"""Benchmarks that compare Helpline with the tools people use instead (see README.md)."""
