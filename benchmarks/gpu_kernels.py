"""Our CUDA kernels on a real GPU, through the runtime's own pycuda launchers: validated, then timed.

    python -m human3r_edge.benchmarks.gpu_kernels [--model SMPLX_NEUTRAL.npz] [--out benchmarks/results]

Needs an NVIDIA GPU and pycuda (the `gpu` extra); on a machine without them it stops with the reason. It runs:

* `CudaSkinner` (kernels/smplx_skinning.cu) for 1, 4 and 16 people, fp32 and fp16 basis storage: the largest
  difference from the numpy path (SMPLXModel.skin) in metres, the four kernels' time on the device (CUDA events),
  the bandwidth that time implies for the bytes the pipeline must move (benchmarks/smplx_bench.py
  `gpu_bytes_per_frame`), and the whole `skin()` call with its host copies (wall clock);
* `CudaPreprocessor` (kernels/preprocess.cu) on 1080p and 720p frames: the largest difference from
  runtime/preprocess.py in uint8 steps, the kernels' time and the whole `process()` call;
* a device-to-device copy of 1 GiB, the bandwidth ceiling the numbers above are read against.

It writes gpu_kernels_<gpu>.json and .md under --out. These are measurements of our kernels, not of TensorRT.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.benchmarks.smplx_bench import PEOPLE, RESULTS, gpu_bytes_per_frame, make_inputs

FRAMES = {"1080p": (1080, 1920), "720p": (720, 1280)}


def _pycuda() -> tuple[Any, Any]:
    try:
        import pycuda.autoinit as autoinit  # noqa: PLC0415 - makes a context on device 0
        import pycuda.driver as driver  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailable(msg("gpu_kernels", "pycuda is not installed", repr(exc), None,
                                     "pip install 'human3r-edge[gpu]' on a machine with an NVIDIA GPU")) from exc
    except Exception as exc:  # noqa: BLE001  pycuda raises its own errors when there is no device or driver
        raise BackendUnavailable(msg("gpu_kernels", "no usable CUDA device", repr(exc)[:300])) from exc
    return driver, autoinit.context


def _event_ms(driver: Any, fn: Callable[[], object], iters: int, warmup: int = 5) -> list[float]:
    """Per-call device time: events around each call on the default stream (the calls queue asynchronously)."""
    for _ in range(warmup):
        fn()
    driver.Context.synchronize()
    out = []
    start, end = driver.Event(), driver.Event()
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(end.time_since(start))
    return out


def _wall_ms(driver: Any, fn: Callable[[], object], iters: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        driver.Context.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _stats(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts)
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "n": int(a.size)}


def copy_bandwidth(driver: Any, nbytes: int = 1 << 30, iters: int = 20) -> dict[str, float]:
    a, b = driver.mem_alloc(nbytes), driver.mem_alloc(nbytes)
    ts = _event_ms(driver, lambda: driver.memcpy_dtod(b, a, nbytes), iters, warmup=3)
    med = float(np.median(ts))
    a.free()
    b.free()
    return {"bytes": nbytes, "median_ms": med, "read_plus_write_GBps": 2 * nbytes / (med * 1e-3) / 1e9}


def bench_skinning(driver: Any, model_path: str, iters: int) -> list[dict]:
    from human3r_edge.runtime.smplx.gpu import CudaSkinner
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    rows = []
    for dtype in ("float32", "float16"):
        model = SMPLXModel.load(model_path, blend_dtype=np.dtype(dtype))
        sk = CudaSkinner(model, max_people=max(PEOPLE))
        for P in PEOPLE:
            x = make_inputs(P)
            args = (x["rotmat"], x["betas"], x["expression"], x["transl"], x["c2w"])
            got, want = sk.skin(*args), model.skin(*args)
            pairs = [(got.v_cam, want.v_cam), (got.j_cam, want.j_cam), (got.v_world, want.v_world),
                     (got.j_world, want.j_world)]
            err = max(float(np.abs(g - w).max()) for g, w in pairs if g is not None and w is not None)
            dev = _stats(_event_ms(driver, lambda: sk.launch(*args), iters))
            call = _stats(_wall_ms(driver, lambda: sk.skin(*args), iters))
            moved = gpu_bytes_per_frame(P, 4 if dtype == "float32" else 2)
            rows.append({"storage": dtype, "people": P, "max_abs_err_m": err, "device": dev, "skin_call": call,
                         "bytes_per_frame": moved["bytes_per_frame"],
                         "achieved_GBps": moved["bytes_per_frame"] / (dev["median_ms"] * 1e-3) / 1e9})
            print(f"skinning {dtype} P={P:2d}: err {err:.2e} m, device {dev['median_ms']:.3f} ms, "
                  f"skin() {call['median_ms']:.3f} ms", flush=True)
    return rows


def bench_preprocess(driver: Any, iters: int, size: int = 512, mhmr_res: int = 896) -> list[dict]:
    from human3r_edge.runtime.preprocess_gpu import CudaPreprocessor
    from human3r_edge.runtime.preprocess import pad_image, preprocess_rgb

    pre = CudaPreprocessor(size, mhmr_res)
    rng = np.random.default_rng(0)
    rows = []
    for label, (h, w) in FRAMES.items():
        frame = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img, mhmr = pre.process(frame)
        ref = preprocess_rgb(frame, size)
        step = 2.0 / 255.0  # one uint8 step in the [-1, 1] normalised image
        err = max(float(np.abs(img - ref).max()), float(np.abs(mhmr - pad_image(ref, mhmr_res)[0]).max())) / step
        dev_frame = pre.upload(frame)
        dev = _stats(_event_ms(driver, lambda: pre.launch(*dev_frame), iters))
        call = _stats(_wall_ms(driver, lambda: pre.process(frame), iters))
        rows.append({"frame": label, "shape": [h, w, 3], "max_err_uint8_steps": err, "device": dev,
                     "process_call": call, "out_hw": [int(img.shape[1]), int(img.shape[2])]})
        print(f"preprocess {label}: err {err:.3f} steps, device {dev['median_ms']:.3f} ms, "
              f"process() {call['median_ms']:.3f} ms", flush=True)
    return rows


def gpu_identity(driver: Any) -> dict[str, Any]:
    dev = driver.Context.get_device()
    return {"gpu": dev.name(), "compute_capability": list(dev.compute_capability()),
            "total_memory_bytes": int(dev.total_memory()), "cuda_driver": list(driver.get_driver_version_tuple())
            if hasattr(driver, "get_driver_version_tuple") else driver.get_driver_version(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Our CUDA kernels on {m['gpu']} (measured)", "",
             f"Measured with `python -m human3r_edge.benchmarks.gpu_kernels` on **{m['gpu']}** (compute capability "
             f"{'.'.join(map(str, m['compute_capability']))}), {m['platform']}, pycuda {r['pycuda']}; "
             f"{r['iters']} timed calls per cell after 5 warm-ups. Kernels built at run time by pycuda (nvcc) from "
             "kernels/*.cu and launched by the runtime's own launchers. Model: " + r["model_note"] + ".", "",
             f"Bandwidth ceiling: a 1 GiB device-to-device copy moved {r['copy']['read_plus_write_GBps']:.0f} GB/s "
             "(read + write).", "",
             "## SMPL-X skinning (`CudaSkinner`, 4 kernels per frame)", "",
             "| basis storage | P | max error vs numpy (m) | kernels ms/frame | ms/body | bytes moved per frame (MB) | "
             "implied GB/s | `skin()` with host copies ms/frame |",
             "|---|---|---|---|---|---|---|---|"]
    for s in r["skinning"]:
        d = s["device"]["median_ms"]
        lines.append(f"| {s['storage']} | {s['people']} | {s['max_abs_err_m']:.1e} | {d:.3f} | {d / s['people']:.4f} | "
                     f"{s['bytes_per_frame'] / 1e6:.1f} | {s['achieved_GBps']:.0f} | "
                     f"{s['skin_call']['median_ms']:.3f} |")
    lines += ["", "## Preprocessing (`CudaPreprocessor`: PIL-exact resize + crop to 512, bilinear pad to 896)", "",
              "| frame | output | max error vs CPU (uint8 steps) | kernels ms | `process()` with host copies ms |",
              "|---|---|---|---|---|"]
    for p in r["preprocess"]:
        lines.append(f"| {p['frame']} | {p['out_hw'][1]}x{p['out_hw'][0]} + 896x896 | {p['max_err_uint8_steps']:.3f} | "
                     f"{p['device']['median_ms']:.3f} | {p['process_call']['median_ms']:.3f} |")
    if r.get("standalone"):
        lines += ["", "## Standalone kernel benchmarks (`nvcc -DKERNEL_BENCH_MAIN`, random constants)", "", "```"]
        lines += r["standalone"].rstrip().splitlines() + ["```"]
    lines += ["", "Times are medians (p10-p90 in the JSON). `ms/body` divides the frame time by P. The error columns "
              "are the largest absolute difference over every output (camera and world vertices and joints)."]
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SMPLX_NEUTRAL.npz (default: a synthetic one in a temp dir)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--standalone", type=Path, default=None,
                    help="a text file with the output of the nvcc standalone benchmarks, copied into the report")
    a = ap.parse_args(argv)
    if a.iters < 1:
        raise Human3RError(msg("gpu_kernels", "--iters must be >= 1", a.iters))
    try:
        driver, _ctx = _pycuda()
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pycuda  # noqa: PLC0415

    tmp = None
    model = a.model
    note = str(model)
    if model is None:
        from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx
        tmp = tempfile.TemporaryDirectory()
        model = str(write_synthetic_smplx(tmp.name, compress=False))
        note = "synthetic SMPL-X (runtime/smplx/synthetic.py, seed 7; official sizes)"
    report = {"machine": gpu_identity(driver), "pycuda": pycuda.VERSION_TEXT, "iters": a.iters, "model_note": note,
              "copy": copy_bandwidth(driver)}
    print(f"{report['machine']['gpu']}: copy {report['copy']['read_plus_write_GBps']:.0f} GB/s", flush=True)
    report["skinning"] = bench_skinning(driver, model, a.iters)
    report["preprocess"] = bench_preprocess(driver, a.iters)
    if a.standalone is not None and a.standalone.exists():
        report["standalone"] = a.standalone.read_text()
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"gpu_kernels_{_slug(report['machine']['gpu'])}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
