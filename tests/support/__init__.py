"""Test-only support code: a toy export generator and the strict CPU stand-in for tensorrt/pycuda (never shipped)."""
