"""Benchmarks that write JSON + markdown results under benchmarks/results/ (never timed assertions)."""
