"""human3r-edge: an edge deployment runtime for Human3R (export/, runtime/, kernels/, benchmarks/)."""

__version__ = "0.1.0"
