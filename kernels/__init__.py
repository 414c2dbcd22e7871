"""CUDA kernels launched by the runtime, each next to its CPU reference, plus a host-emulation harness."""
