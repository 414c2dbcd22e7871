"""Measured fp32 matrix-multiply peak of this machine: one large sgemm through numpy's BLAS, torch and ONNX Runtime.

    python -m human3r_edge.benchmarks.peak [--size 4096] [--repeats 5] [--threads T]

Efficiency in the benchmark is achieved GFLOP/s divided by the best of these (best-of-N per library, then the
maximum over libraries run at the benchmark's thread count). numpy's OpenBLAS thread count is not controlled
here (it uses every core), so its figure only enters the maximum when the benchmark uses every core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from human3r_edge.errors import Human3RError, msg

LIBRARIES = ("numpy", "torch", "ort")


@dataclass(frozen=True)
class SgemmResult:
    """Timing of repeated n x n x n fp32 matrix products through one library."""

    library: str
    size: int  # n
    threads: int | None  # None: the library's default (all cores)
    repeats: int
    best_gflops: float  # 2 n^3 / fastest call
    median_gflops: float
    error: str | None = None  # set when the library could not be measured (then the figures are 0)


def _operands(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    b = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    return a, b


def _time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up: thread pools, packing, first-touch of the output
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return times


def _result(library: str, n: int, threads: int | None, times: list[float]) -> SgemmResult:
    flop = 2.0 * n ** 3
    return SgemmResult(library, n, threads, len(times), flop / min(times) / 1e9,
                       flop / float(np.median(times)) / 1e9)


def sgemm_numpy(n: int = 4096, repeats: int = 5) -> SgemmResult:
    """numpy.matmul (OpenBLAS/MKL, all cores) into a preallocated (n, n) float32 output."""
    a, b = _operands(n)
    out = np.empty((n, n), np.float32)
    return _result("numpy", n, None, _time_calls(lambda: np.matmul(a, b, out=out), repeats))


def sgemm_torch(n: int = 4096, repeats: int = 5, threads: int | None = None) -> SgemmResult:
    """torch.mm (MKL) with `threads` intra-op threads (restored afterwards)."""
    import torch

    a, b = (torch.from_numpy(x) for x in _operands(n))
    out = torch.empty(n, n)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.inference_mode():
            times = _time_calls(lambda: torch.mm(a, b, out=out), repeats)
    finally:
        torch.set_num_threads(before)
    return _result("torch", n, threads, times)


def matmul_model_bytes(n: int, weight: np.ndarray) -> bytes:
    """A one-node ONNX graph y = x @ W with W (n, n) an initializer, as an exported Linear layer has it."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    w = numpy_helper.from_array(weight, "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "sgemm", [x], [y], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def sgemm_ort(n: int = 4096, repeats: int = 5, threads: int | None = None) -> SgemmResult:
    """ONNX Runtime CPU EP MatMul (MLAS, prepacked weight) with `threads` intra-op threads, output bound once."""
    import onnxruntime as ort

    a, b = _operands(n)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 0)
    so.log_severity_level = 3
    sess = ort.InferenceSession(matmul_model_bytes(n, b), sess_options=so, providers=["CPUExecutionProvider"])
    out = np.empty((n, n), np.float32)
    io = sess.io_binding()
    io.bind_cpu_input("x", a)  # the binding reads `a` and writes `out` in place: both stay referenced here
    io.bind_output("y", "cpu", 0, np.float32, [n, n], out.ctypes.data)
    return _result("ort", n, threads, _time_calls(lambda: sess.run_with_iobinding(io), repeats))


def measure(n: int = 4096, repeats: int = 5, threads: int | None = None,
            libraries: Sequence[str] = LIBRARIES) -> dict:
    """Run each library's sgemm; returns the JSON block the benchmark stores under `machine.sgemm`.

    The peak is the maximum best-of-N over libraries run at `threads` (numpy only when `threads` is None or
    every core, since its thread count is not controlled). A library that fails to run is recorded with its error.
    """
    unknown = sorted(set(libraries) - set(LIBRARIES))
    if unknown:
        raise Human3RError(msg("sgemm peak", "unknown libraries", unknown, list(LIBRARIES)))
    if not isinstance(n, int) or n < 16 or not isinstance(repeats, int) or repeats < 1:
        raise Human3RError(msg("sgemm peak", "bad size or repeats", (n, repeats), "size >= 16, repeats >= 1"))
    results = []
    for lib in libraries:
        try:
            if lib == "numpy":
                results.append(sgemm_numpy(n, repeats))
            elif lib == "torch":
                results.append(sgemm_torch(n, repeats, threads))
            else:
                results.append(sgemm_ort(n, repeats, threads))
        except ImportError as exc:
            results.append(SgemmResult(lib, n, threads, 0, 0.0, 0.0, error=repr(exc)))
    all_cores = threads is None or int(threads) >= (os.cpu_count() or 1)
    eligible = [r for r in results if r.error is None and (r.library != "numpy" or all_cores)]
    if not eligible:
        raise Human3RError(msg("sgemm peak", "no library could be measured", [r.error for r in results],
                               hint="install numpy, torch or onnxruntime-gpu"))
    best = max(eligible, key=lambda r: r.best_gflops)
    return {"size": n, "repeats": repeats, "threads": threads, "peak_gflops": best.best_gflops,
            "peak_library": best.library, "libraries": {r.library: asdict(r) for r in results}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.peak", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch / ORT intra-op threads (default: all cores)")
    p.add_argument("--libraries", default=",".join(LIBRARIES))
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    res = measure(args.size, args.repeats, args.threads, [s for s in args.libraries.split(",") if s])
    for r in res["libraries"].values():
        line = (f"{r['library']:>6}: best {r['best_gflops']:7.1f} GFLOP/s, median {r['median_gflops']:7.1f}"
                if r["error"] is None else f"{r['library']:>6}: not measured ({r['error']})")
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"sgemm peak | {res['peak_gflops']:.1f} GFLOP/s ({res['peak_library']}, {args.size}^3, best of "
          f"{args.repeats}, threads {args.threads or 'all'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
