"""Serving through NVIDIA Triton Inference Server (docs/serving.md, docs/triton-tensorrt.md)."""
