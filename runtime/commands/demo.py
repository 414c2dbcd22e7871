"""`human3r-edge demo` (what `make demo` runs): the whole job on synthetic assets, on ONNX Runtime CPU.

Steps, each through the public CLI so the demo exercises exactly what users run:
  1. a synthetic SMPL-X model (runtime/smplx/synthetic.py, numpy, seeded);
  2. a random-weight `tiny` Human3R checkpoint: `human3r-edge make-assets --out DIR`;
  3. a short synthetic sample video (OpenCV);
  4. ONNX export: `human3r-edge export --checkpoint CKPT --resolution WxH --out DIR --lean`;
  5. `human3r-edge run` on it with `--backend ort-cpu`, writing every output file into `demo_out/run/`.
Assets are reused on a second run (delete demo_out/ or pass --fresh to rebuild them). The weights are
untrained: the geometry and the people are not meaningful; the demo shows the machinery and the file formats.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from human3r_edge.errors import Human3RError, msg

TINY_SIZE = 128  # the tiny config's model image long side (as the reference goldens)
VIDEO_WH = (320, 240)  # 4:3 -> a 128x96 model image


def default_out() -> Path:
    """`demo_out/` in the repository (git-ignored) for a source checkout, else in the current directory."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".gitignore").is_file() and (repo / "runtime").is_dir():
        return repo / "demo_out"
    return Path.cwd() / "demo_out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="demo folder (default: demo_out/ in the repository)")
    p.add_argument("--frames", type=int, default=48, help="frames of the synthetic sample video")
    p.add_argument("--fps", type=float, default=12.0)
    p.add_argument("--fresh", action="store_true", help="rebuild every asset (delete the demo folder first)")
    p.add_argument("--backend", default="ort-cpu", help="backend for the run step (default ort-cpu)")


def make_sample_video(path: Path, frames: int = 48, size_wh: tuple[int, int] = VIDEO_WH, fps: float = 12.0,
                      seed: int = 0) -> Path:
    """A synthetic clip: a colour-ramp room, a slowly panning camera and two walking figures (mp4v)."""
    import cv2

    w, h = size_wh
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not vw.isOpened():
        raise Human3RError(msg(str(path), "OpenCV cannot write mp4v video", hint="an OpenCV build with FFmpeg"))
    try:
        for i in range(frames):
            pan = 2.0 * i
            img = np.empty((h, w, 3), np.float32)
            img[..., 0] = 90 + 80 * np.sin((xx + pan) / 37.0)  # B
            img[..., 1] = 110 + 60 * (yy / h)  # G
            img[..., 2] = 120 + 70 * np.cos((xx + pan) / 53.0 + yy / 71.0)  # R
            img[int(0.7 * h):] *= 0.6  # floor
            for k, (x0, speed, color) in enumerate(((0.25, 1.5, (40, 40, 200)), (0.7, -1.0, (200, 60, 40)))):
                cx = int(w * x0 + speed * i) % w
                cy = int(0.55 * h + 4 * np.sin(i / 3.0 + k))
                cv2.ellipse(img, (cx, cy - 38), (9, 11), 0, 0, 360, color, -1)  # head
                cv2.rectangle(img, (cx - 12, cy - 26), (cx + 12, cy + 20), color, -1)  # torso
                cv2.line(img, (cx - 6, cy + 20), (cx - 10 + (i % 6), cy + 48), color, 5)  # legs
                cv2.line(img, (cx + 6, cy + 20), (cx + 10 - (i % 6), cy + 48), color, 5)
            img += rng.normal(0, 4, size=img.shape).astype(np.float32)
            vw.write(np.clip(img, 0, 255).astype(np.uint8))
    finally:
        vw.release()
    tmp.replace(path)
    return path


def _cli(*args: str, what: str) -> None:
    """Run `human3r-edge ARGS` in a subprocess (streams its output); a clear error if it fails."""
    cmd = [sys.executable, "-m", "human3r_edge", *args]
    print(f"$ human3r-edge {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise Human3RError(msg(f"demo: {what}", "step failed", f"exit code {proc.returncode}",
                               hint=f"run `human3r-edge {' '.join(args)}` to see the problem"))


def find_checkpoint(assets: Path) -> Path:
    """The checkpoint `make-assets` wrote: assets/tiny.pth, else the only *.pth / *.safetensors in assets/."""
    preferred = assets / "tiny.pth"
    if preferred.is_file():
        return preferred
    found = sorted([*assets.glob("*.pth"), *assets.glob("*.safetensors")])
    if len(found) != 1:
        raise Human3RError(msg(f"demo: {assets}", "cannot tell which file is the tiny checkpoint",
                               [p.name for p in found], "tiny.pth (or exactly one *.pth / *.safetensors)",
                               "re-run with --fresh"))
    return found[0]


def main(args: argparse.Namespace) -> int:
    try:
        return _demo(args)
    except Human3RError as exc:
        print(f"human3r-edge demo | {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

    t0 = time.perf_counter()
    out = (args.out or default_out()).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    smplx_file = assets / "SMPLX_NEUTRAL.npz"
    print(f"[1/5] synthetic SMPL-X model -> {smplx_file}", flush=True)
    if not smplx_file.is_file():
        write_synthetic_smplx(smplx_file)
    print("[2/5] random-weight tiny Human3R checkpoint", flush=True)
    if not any(assets.glob("*.pth")) and not any(assets.glob("*.safetensors")):
        _cli("make-assets", "--out", str(assets), what="make-assets")
    ckpt = find_checkpoint(assets)
    video = out / "sample.mp4"
    print(f"[3/5] synthetic sample video ({args.frames} frames) -> {video}", flush=True)
    if not video.is_file():
        make_sample_video(video, args.frames, fps=args.fps)
    export = out / "export"
    w, h = _model_resolution()
    print(f"[4/5] ONNX export at {w}x{h} -> {export}", flush=True)
    if not (export / "export.json").is_file():
        _cli("export", "--checkpoint", str(ckpt), "--resolution", f"{w}x{h}", "--out", str(export), "--lean",
             what="export")
    run_dir = out / "run"
    print(f"[5/5] run on {args.backend} -> {run_dir}", flush=True)
    _cli("run", str(video), "--engines", str(export), "--smplx-model", str(smplx_file), "--backend", args.backend,
         "--out", str(run_dir), "--overwrite",  # the demo owns demo_out/run: a second `make demo` replaces it
         "--preview", "--save-meshes", "--save-depth", "--reset-interval", "24",
         # random weights predict a ~0.5 human mask everywhere: keep every point (a mask never exceeds 1)
         "--conf-threshold", "1.0", "--mask-threshold", "1.0", what="run")
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    tracks = sum(1 for p in files if p.parent.name == "people")
    print("\nOutputs:")
    for name in ("trajectory.tum", "cameras.json", "scene.ply", "summary.json"):
        print(f"  {run_dir / name}")
    print(f"  {run_dir / 'people'}/track_NNNN.npz ({tracks} tracks)")
    print(f"  {run_dir / 'depth'}/, {run_dir / 'meshes'}/ ({sum(1 for p in files if p.parent.name == 'meshes')} "
          "meshes)")
    print(f"Preview: {run_dir / 'preview.mp4'}")
    print("\nNOTE: the weights are random (untrained), so the camera path, the scene and the people are NOT "
          "meaningful;\nthe demo shows the pipeline and its file formats. With a real checkpoint and SMPL-X model:\n"
          "  human3r-edge run VIDEO.mp4 --checkpoint human3r_896L.pth --smplx-model SMPLX_NEUTRAL.npz "
          "--backend ort-cpu --out out/ --reset-interval 100 --preview")
    print(f"human3r-edge demo | done in {time.perf_counter() - t0:.0f} s -> {out}")
    return 0


def _model_resolution() -> tuple[int, int]:
    from human3r_edge.runtime.preprocess import output_shape

    h, w = output_shape(VIDEO_WH[0], VIDEO_WH[1], TINY_SIZE)
    return w, h
