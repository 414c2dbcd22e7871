"""PROJECTION (not a measurement): per-frame time and memory of each variant on Jetson Orin and an RTX 4090.

    python -m human3r_edge.benchmarks.projection [--resolution 512x288] [--max-people 16]
        [--export 672S=DIR ...] [--out benchmarks/results]

For each variant the FLOPs of the lean deployment graphs (encoder + decoder step + SMPL-X head, K human slots)
are counted from an ONNX export when one is given (`--export NAME=DIR`), else from the PyTorch model on the meta
device (the same stages; the two agree, see the cross-check in the JSON). Then, per device:

* compute floor = FLOPs / dense FP16 tensor peak; realistic band = FLOPs / (0.6 .. 0.4 x peak);
* bandwidth floor = FP16 weight bytes / memory bandwidth (every weight is read once per frame);
* memory = FP16 weights + recurrent state (two ping-pong copies + the initial value, fp32) + activation estimate
  (eager liveness peak of the largest graph at 2 bytes per element, attention unfused: an upper bound), against
  the 8 GB budget (the paper's figure) and the device's memory.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from human3r_edge.errors import Human3RError, msg

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("672S", "672B", "672L", "896L")
BUDGET_BYTES = 8 * 10**9  # the paper's "8 GB"
EFFICIENCY_BAND = (0.6, 0.4)  # realistic TensorRT FP16 efficiency (deployment.md section 5)


@dataclass(frozen=True)
class Device:
    """Dense FP16 tensor-core peak and memory of one target, with where each figure comes from."""

    name: str
    fp16_tflops: float  # dense, FP32 accumulate where the vendor distinguishes
    bandwidth_gbs: float
    memory_gb: float  # total device (Jetson: shared with the OS) memory
    source: str


# deployment.md section 5: [R] read in a source, [I] inferred there (sparse INT8 TOPS / 4 or TC x clock x 512)
DEVICES = (
    Device("Orin Nano 8GB", 10.2, 68.0, 8.0, "[I] deployment.md s5: ~10.2 dense FP16 TFLOPS (17 with the Super "
           "firmware), 68 GB/s LPDDR5 (102 GB/s Super) [R]; 8 GB shared with the OS"),
    Device("Orin NX 16GB", 15.0, 102.4, 16.0, "[I] deployment.md s5: ~15.0 dense FP16 TFLOPS at MAXN (19.2 "
           "Super), 102.4 GB/s"),
    Device("AGX Orin 64GB", 42.6, 204.8, 64.0, "[R] deployment.md s5: 42.6 dense FP16 TFLOPS (64 tensor cores at "
           "1.3 GHz; 170 sparse INT8 TOPS / 4), 204.8 GB/s"),
    Device("RTX 4090", 165.0, 1008.0, 24.0, "[R] deployment.md s5 (waredb): 165 dense FP16 TFLOPS with FP32 "
           "accumulate (330 with FP16 accumulate), 1008 GB/s, 24 GB"),
)


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise Human3RError(msg("--resolution", "not WxH", repr(text), "e.g. 512x288")) from exc
    return w, h


def variant_counts(name: str, width: int, height: int, max_people: int, export_dir: Path | None = None) -> dict:
    """FLOPs, weights, state and activation estimate of one variant's lean deployment graphs."""
    from human3r_edge.runtime.config import get_config

    from human3r_edge.benchmarks.flops import count_export, summarize, torch_stage_flops

    cfg = get_config(name)
    meta = torch_stage_flops(cfg, width, height, max_people, lean=True, activation_itemsize=2)
    state_bytes = 3 * 4 * (cfg.state_size * cfg.dec_embed_dim + cfg.local_mem_size * 2 * cfg.dec_embed_dim)
    out: dict[str, Any] = {"variant": name, "state_bytes": state_bytes, "torch_meta": meta}
    if export_dir is not None:
        s = summarize(count_export(export_dir, activation_itemsize=2))
        out.update(source="onnx (lean export)", export_dir=str(export_dir), flops=s["stages"], total_flops=s["total"], params=s["params"],
                   activation_bytes=max(s["activation_peak_bytes"].values()),
                   onnx_vs_meta=(s["total"] - meta["total"]) / meta["total"])
    else:
        out.update(source="torch-meta", flops=meta["stages"], total_flops=meta["total"], params=meta["params"],
                   activation_bytes=max(meta["activation_peak_bytes"].values()))
    return out


def project(counts: Mapping[str, Any], device: Device) -> dict:
    """One row of the projection table: floors, band, FPS and memory of a variant on a device."""
    flops = float(counts["total_flops"])
    peak = device.fp16_tflops * 1e12
    weights16 = 2 * int(counts["params"])
    mem = weights16 + int(counts["state_bytes"]) + int(counts["activation_bytes"])
    floor_ms = flops / peak * 1e3
    bw_ms = weights16 / (device.bandwidth_gbs * 1e9) * 1e3
    lo_ms, hi_ms = (flops / (e * peak) * 1e3 for e in EFFICIENCY_BAND)
    return {
        "device": device.name, "variant": counts["variant"], "gflop": flops / 1e9,
        "compute_floor_ms": floor_ms, "bandwidth_floor_ms": bw_ms, "floor_ms": max(floor_ms, bw_ms),
        "realistic_ms": [lo_ms, hi_ms], "realistic_fps": [1e3 / hi_ms, 1e3 / lo_ms],
        "fp16_weight_bytes": weights16, "state_bytes": int(counts["state_bytes"]),
        "activation_bytes": int(counts["activation_bytes"]), "memory_bytes": mem,
        "within_8gb_budget": mem <= BUDGET_BYTES, "fits_device_memory": mem <= device.memory_gb * 1e9,
    }


def projection(width: int = 512, height: int = 288, max_people: int = 16,
               exports: Mapping[str, Path] | None = None, variants: Sequence[str] = VARIANTS) -> dict:
    """The whole projection: counts per variant, rows per variant x device, device figures and sources."""
    exports = dict(exports or {})
    unknown = sorted(set(exports) - set(variants))
    if unknown:
        raise Human3RError(msg("--export", "variant not projected", unknown, list(variants)))
    counts = {v: variant_counts(v, width, height, max_people, exports.get(v)) for v in variants}
    rows = [project(counts[v], d) for v in variants for d in DEVICES]
    return {
        "label": "PROJECTION: computed from counted FLOPs and published/inferred device peaks, not measured",
        "resolution": [width, height], "max_people": max_people, "budget_bytes": BUDGET_BYTES,
        "efficiency_band": list(EFFICIENCY_BAND), "devices": [asdict(d) for d in DEVICES],
        "variants": counts, "rows": rows, "date": _dt.date.today().isoformat(),
        "command": "python -m human3r_edge.benchmarks.projection " + " ".join(sys.argv[1:]),
    }


def markdown(p: Mapping[str, Any]) -> str:
    w, h = p["resolution"]
    gb = 1e9
    lines = [f"# PROJECTION: Human3R lean deployment graphs at {w}x{h}, K={p['max_people']} human slots", "",
             "**These are projections, not measurements.** Compute floor = counted FLOPs / dense FP16 peak; "
             "realistic band = 40-60 % of that peak; bandwidth floor = FP16 weights / memory bandwidth. Memory = "
             "FP16 weights + state (fp32, ping-pong + initial) + activation estimate (eager liveness peak of the "
             "largest graph at FP16, attention unfused: an upper bound).", "",
             "| variant | device | GFLOP/frame | compute floor ms | bandwidth floor ms | realistic ms (60-40 %) "
             "| realistic FPS | FP16 weights GB | state MB | activations GB | memory GB | <= 8 GB budget "
             "| fits device |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['gflop']:.0f} | {r['compute_floor_ms']:.1f} | "
            f"{r['bandwidth_floor_ms']:.1f} | {r['realistic_ms'][0]:.1f}-{r['realistic_ms'][1]:.1f} | "
            f"{r['realistic_fps'][0]:.1f}-{r['realistic_fps'][1]:.1f} | {r['fp16_weight_bytes'] / gb:.2f} | "
            f"{r['state_bytes'] / 1e6:.1f} | {r['activation_bytes'] / gb:.2f} | {r['memory_bytes'] / gb:.2f} | "
            f"{'yes' if r['within_8gb_budget'] else 'NO'} | {'yes' if r['fits_device_memory'] else 'NO'} |")
    lines += ["", "FLOPs per stage (GFLOP) and their source:", "",
              "| variant | encoder | decoder step | SMPL-X head | total | weights (M) | source | ONNX vs meta |",
              "|---|---|---|---|---|---|---|---|"]
    for v, c in p["variants"].items():
        f = c["flops"]
        cross = f"{100 * c['onnx_vs_meta']:+.2f} %" if "onnx_vs_meta" in c else "-"
        lines.append(f"| {v} | {f['encoder'] / 1e9:.1f} | {f['decoder'] / 1e9:.1f} | {f['smpl_head'] / 1e9:.2f} | "
                     f"{c['total_flops'] / 1e9:.1f} | {c['params'] / 1e6:.1f} | {c['source']} | {cross} |")
    lines += ["", "Device peaks used (dense FP16 tensor TFLOPS, memory bandwidth) and their sources:", ""]
    lines += [f"- **{d['name']}**: {d['fp16_tflops']} TFLOPS, {d['bandwidth_gbs']} GB/s, {d['memory_gb']:.0f} GB. "
              f"{d['source']}" for d in p["devices"]]
    lines += ["", "Caveats: element-wise ops, LayerNorm, softmax and resampling are not in the FLOP count; Jetson "
              "memory is shared with the OS and the camera pipeline; the Super figures of Orin Nano/NX would "
              "shorten those rows by 1.3-1.7x; TensorRT fuses attention, so real activation memory is lower than "
              "the estimate.", "", f"Command: `{p['command']}` ({p['date']})"]
    return "\n".join(lines) + "\n"


def write(p: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    w, h = p["resolution"]
    out_dir.mkdir(parents=True, exist_ok=True)
    j = out_dir / f"projection_{w}x{h}.json"
    j.write_text(json.dumps(p, indent=1))
    md = j.with_suffix(".md")
    md.write_text(markdown(p))
    return j, md


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.projection",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", default="512x288")
    ap.add_argument("--max-people", type=int, default=16, help="K human slots of the deployment export")
    ap.add_argument("--export", action="append", default=[], metavar="NAME=DIR",
                    help="count this variant from a lean ONNX export instead of the meta-device model")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    w, h = parse_resolution(args.resolution)
    exports = {}
    for item in args.export:
        name, sep, path = item.partition("=")
        if not sep:
            raise Human3RError(msg("--export", "not NAME=DIR", repr(item), "e.g. 672S=exports/672S_lean"))
        exports[name] = Path(path)
    p = projection(w, h, args.max_people, exports, [v for v in args.variants.split(",") if v])
    j, md = write(p, args.out)
    print(markdown(p).split("\n\nFLOPs per stage")[0])
    print(f"projection | {len(p['rows'])} rows (PROJECTION, not measured) -> {j}, {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
