"""FP16 against FP32 on every golden: per-output error, decisions over 200 frames and the margin of every flip.

    python -m human3r_edge.benchmarks.fp16_report [--goldens DIR] [--frames 200] [--write-budgets]
                                                  [--pin-probe GOLDEN]

For each golden folder (a folder with golden.npz and checkpoint.pth) it exports the checkpoint at the golden's
resolution with K = the most humans in any step (at least 4) and FP16 variants, then measures
(export/fp16_budgets.py `measure_golden`, on ONNX Runtime CPU):
* the golden replay on the FP16 graphs: relative error per key against the golden;
* every graph output, FP16 file against FP32 file, on the golden's replay inputs and on synthetic frames;
* `--frames` synthetic frames through the runtime pipeline: the frames with the same decisions, every flipped
  decision with the FP32 value's margin to the decision boundary against the measured FP16 error
  (export/fp16_decisions.py), and the continuous errors (pose, SMPL-X, vertices, depth);
* the precision split of the FP16 files: FLOPs computed in FP32 (the pinned nodes) and FP32 weight bytes.
`--pin-probe GOLDEN` also measures what keeping more of the graph in FP32 buys on that golden (the camera
rotation error over the frames, decoder fed the FP32 detections) and what it costs in FLOPs and weight bytes.

Writes benchmarks/results/fp16_report.json and .md; `--write-budgets` also writes export/data/fp16_budgets.json
from the same measurements (export/fp16_budgets.py `budgets_from`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BUDGETS = REPO / "export" / "data" / "fp16_budgets.json"
# pins evaluated by --pin-probe: name -> (graph, regex over node names kept FP32)
PINS = {
    "CUT3R encoder attention": ("encoder", r"^/enc_blocks\.\d+/attn/"),
    "CUT3R encoder (patch embed, blocks, norm)": ("encoder", r"^/(enc_blocks|patch_embed|enc_norm)"),
    "DINOv2 backbone + detection MLPs": ("encoder", r"^/(backbone|mlp_classif|mlp_offset)"),
}


def golden_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "golden.npz").is_file() and (p / "checkpoint.pth").is_file())


def precision_split(path: Path) -> dict[str, Any]:
    """FLOPs of the counted ops (MatMul, Conv, ...) by the precision they compute in, and weight bytes by type,
    of one ONNX file (an FP16 file's FP32 share is the cost of its FP32 pins)."""
    from onnx import TensorProto

    from human3r_edge.benchmarks.flops import load_structure, node_flops, shape_table

    m = load_structure(path)
    shapes, types = shape_table(m)
    flops = {"fp32": 0, "fp16": 0}
    for n in m.graph.node:
        f = node_flops(n, shapes) or 0
        if f:
            flops["fp16" if types.get(n.input[0]) == TensorProto.FLOAT16 else "fp32"] += f
    weights = {"fp32": 0, "fp16": 0}
    for t in m.graph.initializer:
        count = math.prod(int(d) for d in t.dims)
        if t.data_type == TensorProto.FLOAT:
            weights["fp32"] += 4 * count
        elif t.data_type == TensorProto.FLOAT16:
            weights["fp16"] += 2 * count
    total = flops["fp32"] + flops["fp16"]
    return {"flops_fp32": flops["fp32"], "flops_fp16": flops["fp16"],
            "fp32_flop_share": flops["fp32"] / total if total else 0.0,
            "weight_bytes_fp32": weights["fp32"], "weight_bytes_fp16": weights["fp16"]}


def pin_probe(golden: Path, work: Path, frames: int, log: Any) -> dict[str, Any]:
    """Camera rotation error (max and p95 over `frames` synthetic frames, degrees) of FP16 variants against FP32:
    the decoder runs on its own recurrent state and the FP32 detections (slots) of each frame, so only arithmetic
    differs. Variants: FP16 encoder or decoder alone, and the FP16 graphs with each of PINS kept FP32."""
    import onnx
    import onnxruntime as ort

    from human3r_edge.export.assets import synthetic_frames
    from human3r_edge.export.fp16 import convert_to_fp16
    from human3r_edge.export.fp16_budgets import _angle_deg
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.config import Human3RConfig
    from human3r_edge.runtime.geometry import pose_to_c2w
    from human3r_edge.runtime.iospec import ExportSpec
    from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions
    from human3r_edge.runtime.preprocess import pad_image

    exp = work / golden.name / "export"
    spec = ExportSpec.load(exp)
    w, h = (int(v) for v in spec.resolution)
    imgs = synthetic_frames(w, h, frames, seed=1)
    rec: list[tuple] = []
    with open_backend("ort-cpu", exp, intra_op_threads=2) as b32:
        side = Human3RConfig.from_dict(b32.spec.config).mhmr_img_res
        p = FramePipeline(b32, PipelineOptions(max_remembered=None))
        for img in imgs:
            mh = pad_image(img, side)[0]
            first = p.segment_frame == 0
            a = p.step(img, mh)
            rec.append((img, mh, p.detector.slots_for(a.detections).feeds(), first, pose_to_c2w(a.pose)[:3, :3]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    init = dict(np.load(exp / spec.initial_state_file))
    files = {g.name: (g.file, str(g.fp16_file)) for g in spec.graphs if g.fp16_file}  # the export has --fp16

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def rotation_error(enc: Any, dec: Any) -> np.ndarray:
        state = {"state": init["state"], "mem": init["mem"]}
        errs = []
        for img, mh, slots, first, r32 in rec:
            et, dt = enc.run(["enc_tokens", "dino_tokens"], {"img": img[None], "img_mhmr": mh[None]})
            o = dec.run(["state_out", "mem_out", "camera_pose"],
                        {"enc_tokens": et, "dino_tokens": dt, **state, **slots,
                         "first": np.array([1.0 if first else 0.0], np.float32),
                         "ttt3r": np.array([1.0], np.float32)})
            state = {"state": o[0], "mem": o[1]}
            errs.append(_angle_deg(r32, pose_to_c2w(o[2][0])[:3, :3]))
        return np.array(errs)

    enc32, enc16 = session(exp / files["encoder"][0]), session(exp / files["encoder"][1])
    dec32, dec16 = session(exp / files["decoder"][0]), session(exp / files["decoder"][1])
    out: dict[str, Any] = {"golden": golden.name, "frames": frames, "variants": {}}

    def record(name: str, errs: np.ndarray, cost: dict | None = None) -> None:
        out["variants"][name] = {"max_deg": float(errs.max()), "p95_deg": float(np.percentile(errs, 95)),
                                 "worst_frame": int(errs.argmax()), **({"cost": cost} if cost else {})}
        log(f"pin probe {golden.name}: {name}: max {errs.max():.3f} deg (frame {errs.argmax()}), "
            f"p95 {np.percentile(errs, 95):.3f}")

    record("FP16 encoder + FP16 decoder (as exported)", rotation_error(enc16, dec16))
    record("FP16 encoder + FP32 decoder", rotation_error(enc16, dec32))
    record("FP32 encoder + FP16 decoder", rotation_error(enc32, dec16))
    base = {g: precision_split(exp / files[g][1]) for g in ("encoder", "decoder")}
    for name, (graph, pattern) in PINS.items():
        m32 = onnx.load(str(exp / files[graph][0]))
        keep = [n.name for n in m32.graph.node if re.search(pattern, n.name)]
        m16, _ = convert_to_fp16(m32, keep=keep)
        path = work / golden.name / f"pinned_{graph}.onnx"
        onnx.save(m16, str(path))
        split = precision_split(path)
        cost = {"graph": graph, "kept_nodes": len(keep),
                "extra_fp32_flops": split["flops_fp32"] - base[graph]["flops_fp32"],
                "fp32_flop_share": split["fp32_flop_share"],
                "fp32_flop_share_before": base[graph]["fp32_flop_share"],
                "extra_weight_bytes": (split["weight_bytes_fp32"] + split["weight_bytes_fp16"])
                - (base[graph]["weight_bytes_fp32"] + base[graph]["weight_bytes_fp16"])}
        pinned = session(path)
        enc, dec = (pinned, dec16) if graph == "encoder" else (enc16, pinned)
        record(f"{name} kept FP32", rotation_error(enc, dec), cost)
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def markdown(doc: dict) -> str:
    from human3r_edge.export.fp16_decisions import Flip, margin_table

    lines = ["# FP16 against FP32 on every golden", "",
             f"Generated by `{doc['command']}` on {doc['host']['date']} ({doc['host']['machine']}; "
             f"{doc['host']['load']}). ONNX Runtime CPU, FP16 graphs of `export --fp16` against the FP32 graphs.",
             "", "Rules (docs/fp16.md): a flipped decision is acceptable only where the FP32 value's margin to the "
             "boundary of the decision that flipped is below the FP16 error measured for the deciding value over "
             "the same run (threshold: max |score16 - score32|; NMS/cap: twice that; head patch: the largest "
             "head-location error; track: twice the largest log-assignment error). First order = taken on the "
             "same inputs (the encoder has no state; the decoder is teacher-forced with the FP32 state).", ""]
    lines += ["## Decisions over the stream", "",
              "| golden | config | K | frames | same decisions | first-order flip frames | downstream flips | "
              "unacceptable flips | score error | head-location error (px) |", "|---|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for g in doc["goldens"]:
        s = g["stream"]
        lines.append(f"| {g['golden']} | {g['config']} | {g['max_people']} | {s['frames']} | {s['same_decisions']} "
                     f"| {s['first_order_flip_frames']} | {s['downstream_flip_frames']} | {s['unacceptable_flips']} "
                     f"| {_fmt(s['score_error'])} | {_fmt(s['loc_error_px'])} |")
    for g in doc["goldens"]:
        lines += ["", f"### Flips on {g['golden']}", ""]
        flips = [Flip(**{**f, **{k: (math.nan if f[k] is None else f[k]) for k in
                                 ("fp32", "fp16", "margin", "threshold_margin", "bound")}})
                 for f in g["stream"]["flips"]]
        lines += margin_table(flips) if flips else ["No flipped decision."]
    lines += ["", "## Continuous errors over the stream (FP16 stream on its own state, FP32 detections)", "",
              "| golden | camera transl rel | camera rot (deg) | SMPL rot (deg) | SMPL transl | vertices cam | "
              "vertices world | depth rel | finite |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for g in doc["goldens"]:
        s = g["stream"]
        lines.append(f"| {g['golden']} | " + " | ".join(_fmt(s[k]) for k in (
            "camera_translation_rel", "camera_rotation_deg", "smpl_rotation_deg", "smpl_transl_abs",
            "vertices_cam_abs", "vertices_world_abs", "depth_rel")) + f" | {s['finite']} |")
    lines += ["", "## Per-output error of each graph (max |FP16 - FP32|; golden replay inputs / synthetic frames)", "",
              "| output | " + " | ".join(g["golden"] for g in doc["goldens"]) + " | budget atol |",
              "|---|" + "---:|" * (len(doc["goldens"]) + 1)]
    keys = sorted({k for g in doc["goldens"] for src in g["graphs"].values() for k in src})
    for k in keys:
        cells = []
        for g in doc["goldens"]:
            cells.append(" / ".join(_fmt(g["graphs"][src][k]["max_abs"]) if k in g["graphs"][src] else "-"
                                    for src in ("golden", "synthetic")))
        budget = doc.get("budgets", {}).get("graphs", {}).get(k, {}).get("atol")
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {'' if budget is None else _fmt(budget)} |")
    lines += ["", "## Golden replay on FP16 (rel = max|out - ref| / max|ref|)", "",
              "| key | " + " | ".join(g["golden"] for g in doc["goldens"]) + " | budget |",
              "|---|" + "---:|" * (len(doc["goldens"]) + 1)]
    for k in sorted({k for g in doc["goldens"] for k in g["replay_rel"]}):
        vals = [g["replay_rel"].get(k) for g in doc["goldens"]]
        if max(v or 0.0 for v in vals) <= 0:
            continue
        budget = doc.get("budgets", {}).get("replay", {}).get(k)
        lines.append(f"| {k} | " + " | ".join("-" if v is None else _fmt(v) for v in vals)
                     + f" | {'' if budget is None else _fmt(budget)} |")
    notes = {g["golden"]: g["replay_notes"] for g in doc["goldens"] if any(g["replay_notes"].values())}
    if notes:
        lines += ["", f"Sub-threshold NMS peaks that moved in the replay (not compared): {notes}"]
    lines += ["", "## FP32 share of the FP16 files (the cost of the pins in the export)", "",
              "| golden | graph | FLOPs in FP32 | FLOPs in FP16 | FP32 FLOP share | FP32 weights (bytes) | "
              "FP16 weights (bytes) |", "|---|---|---:|---:|---:|---:|---:|"]
    for g in doc["goldens"]:
        for graph, c in g["precision"].items():
            lines.append(f"| {g['golden']} | {graph} | {c['flops_fp32']:,} | {c['flops_fp16']:,} | "
                         f"{c['fp32_flop_share']:.1%} | {c['weight_bytes_fp32']:,} | {c['weight_bytes_fp16']:,} |")
    probe = doc.get("pin_probe")
    if probe:
        lines += ["", f"## Pin probe on {probe['golden']}: camera rotation error against FP32 over {probe['frames']} "
                  "frames (decoder on its own state, FP32 detections)", "",
                  "| variant | max (deg) | p95 (deg) | worst frame | extra FP32 FLOPs | graph FP32 FLOP share "
                  "(before -> after) | extra weight bytes |", "|---|---:|---:|---:|---:|---|---:|"]
        for name, v in probe["variants"].items():
            c = v.get("cost")
            cost = (f"{c['extra_fp32_flops']:,} | {c['graph']}: {c['fp32_flop_share_before']:.1%} -> "
                    f"{c['fp32_flop_share']:.1%} | {c['extra_weight_bytes']:,}") if c else " | | "
            lines.append(f"| {name} | {v['max_deg']:.3f} | {v['p95_deg']:.3f} | {v['worst_frame']} | {cost} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from human3r_edge.export.fp16_budgets import budgets_from, measure_golden
    from human3r_edge.errors import Human3RError

    default_root = Path(os.environ.get("HUMAN3R_GOLDENS", REPO.parent / "shared" / "goldens"))
    ap = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.fp16_report", description=__doc__.split("\n")[0])
    ap.add_argument("--goldens", type=Path, default=default_root, help=f"goldens root (default {default_root})")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS / "fp16_report.json")
    ap.add_argument("--write-budgets", action="store_true", help=f"also write {BUDGETS.relative_to(REPO)}")
    ap.add_argument("--pin-probe", default=None, help="golden folder name to run the FP32 pin probe on")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="re-derive the budgets and the .md from a report JSON of an earlier run (no measuring)")
    args = ap.parse_args(argv)
    if args.from_json:
        doc = json.loads(args.from_json.read_text())
        budgets = budgets_from(doc["goldens"], doc["command"] if args.write_budgets else "")
        doc["budgets"] = {k: budgets[k] for k in ("replay", "graphs", "stream", "limits")}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(doc))
        if args.write_budgets:
            BUDGETS.write_text(json.dumps(budgets, indent=1) + "\n")
        return 0
    dirs = golden_folders(args.goldens) if args.goldens.is_dir() else []
    if not dirs:
        print(f"fp16_report | goldens root {args.goldens}: no golden folders. Expected folders with golden.npz and "
              "checkpoint.pth. Hint: pass --goldens or set HUMAN3R_GOLDENS", file=sys.stderr)
        return 2
    command = "python -m human3r_edge.benchmarks.fp16_report " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(s: str) -> None:
        print(f"fp16_report | {s}", file=sys.stderr, flush=True)

    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            measured = []
            for g in dirs:
                m = measure_golden(g, tmp, args.frames, log=log)
                exp = Path(tmp) / g.name / "export"
                spec = json.loads((exp / "export.json").read_text())
                m["precision"] = {gr["name"]: precision_split(exp / gr["fp16_file"]) for gr in spec["graphs"]}
                measured.append(m)
            budgets = budgets_from(measured, command if args.write_budgets else "")
            probe = None
            if args.pin_probe:
                probe = pin_probe(args.goldens / args.pin_probe, Path(tmp), args.frames, log)
    except Human3RError as exc:
        print(f"fp16_report | {exc}", file=sys.stderr)
        return 2
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    doc = {"command": command, "seconds": round(time.time() - t0, 1),
           "host": {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "load": f"load average {load[0]:.1f} at the end: "
                            + ("not a quiet machine" if load[0] > 1.5 else "quiet")},
           "goldens": measured, "budgets": {k: budgets[k] for k in ("replay", "graphs", "stream", "limits")},
           **({"pin_probe": probe} if probe else {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    log(f"report -> {args.out} and {args.out.with_suffix('.md')} in {doc['seconds']} s")
    if args.write_budgets:
        BUDGETS.write_text(json.dumps(budgets, indent=1) + "\n")
        log(f"budgets -> {BUDGETS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
