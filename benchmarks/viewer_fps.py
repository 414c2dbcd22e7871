"""Pipeline FPS with the live viewer off and on (`run --viewer`), in one invocation, on the same source.

    python -m human3r_edge.benchmarks.viewer_fps --engines demo_out/export \
        --smplx-model demo_out/assets/SMPLX_NEUTRAL.npz [--frames 240] [--repeats 2] [--out benchmarks/results/viewer_fps]

Configurations, interleaved `repeats` times (off, on, on+client, on+browser, off, ...) so that load drifts hit all alike:
  off          plain `run`;
  on           `run --viewer` with no browser connected (the server and the drawing thread run, nothing is sent);
  on+client    `run --viewer` with a remote-like client connected: a websocket client that receives every
               message the browser would and renders nothing (a laptop's browser costs the Jetson no more);
  on+browser   `run --viewer` with headless Chromium (software WebGL) connected during the run, on THIS machine
               at `nice 19`: its rendering still competes for the same cores (on a Jetson the browser is on a
               laptop), but yields them to the run.
FPS is the run's own (summary.json `fps`: committed frames / loop seconds); the viewer's drawn/dropped counts
come from summary.json `viewer`. The source is the demo's synthetic clip (runtime/commands/demo.py), `--frames` long.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _run(cmd: list[str], out: Path, client: str | None) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    visits: list[float] = []
    received: list[int] = []  # bytes the websocket client received (on+client)
    err_lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if client and "live viewer at http" in line:
                url = line.split(" at ", 1)[1].strip()
                target = _visit if client == "browser" else _ws_client
                threading.Thread(target=target, args=(url, proc, visits, received), daemon=True).start()

    t = threading.Thread(target=read_stderr, daemon=True)
    t.start()
    proc.wait(timeout=1800)
    t.join(timeout=10)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {''.join(err_lines)[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    return {"fps": s["fps"], "frames": s["frames"], "viewer": s.get("viewer"), "client_connected_s": visits,
            "client_bytes": received[0] if received else None}


def _ws_client(url: str, proc: subprocess.Popen, visits: list[float], received: list[int]) -> None:
    """A remote viewer that renders nothing: a websocket client that receives and discards every message."""
    import asyncio

    import viser
    import websockets

    async def client() -> None:
        t0 = time.monotonic()
        async with websockets.connect(url.replace("http://", "ws://"), max_size=None,
                                      subprotocols=[f"viser-v{viser.__version__}"]) as ws:  # type: ignore[list-item]
            visits.append(time.monotonic() - t0)
            received.append(0)
            while proc.poll() is None:
                try:
                    received[-1] += len(await asyncio.wait_for(ws.recv(), timeout=0.2))
                except asyncio.TimeoutError:
                    pass
                except websockets.ConnectionClosed:  # the run ended and stopped its server
                    return

    asyncio.run(client())


def _visit(url: str, proc: subprocess.Popen, visits: list[float], received: list[int]) -> None:
    """Open `url` in headless Chromium and keep the page open until the run ends."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.browser import chromium_page  # type: ignore[import-not-found]

    t0 = time.monotonic()
    with chromium_page(nice=19) as page:  # the browser's software rendering yields the cores to the run
        page.goto(url)
        visits.append(time.monotonic() - t0)
        while proc.poll() is None:
            time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=Path, required=True)
    ap.add_argument("--smplx-model", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    from human3r_edge.runtime.commands.demo import make_sample_video

    runs: dict[str, list[dict]] = {"off": [], "on": [], "on+client": [], "on+browser": []}
    with tempfile.TemporaryDirectory() as tmp:
        video = make_sample_video(Path(tmp) / "clip.mp4", frames=args.frames)
        base = [sys.executable, "-m", "human3r_edge", "run", str(video), "--engines", str(args.engines),
                "--smplx-model", str(args.smplx_model), "--backend", "ort-cpu", "--no-progress", "--overwrite",
                "--conf-threshold", "1.0", "--mask-threshold", "1.0"]
        for rep in range(args.repeats):
            for name in runs:
                out = Path(tmp) / f"{name}-{rep}"
                extra = [] if name == "off" else ["--viewer", "--viewer-port", str(_free_port())]
                res = _run(base + ["--out", str(out)] + extra, out, client=name.partition("+")[2] or None)
                runs[name].append(res)
                v = res["viewer"] or {}
                print(f"{name:>11} #{rep}: {res['fps']:.2f} FPS" + (
                    f", drew {v['frames_drawn']}/{v['frames_offered']} ({v['frames_dropped']} dropped), "
                    f"{v['max_clients']} browsers" if v else "")
                      + (f", client received {res['client_bytes'] / 1e6:.1f} MB" if res["client_bytes"] else ""),
                      flush=True)
    summary: dict[str, dict[str, Any]] = {name: {"fps_median": float(np.median([r["fps"] for r in rs])), "fps": [r["fps"] for r in rs],
                      "dropped": [(r["viewer"] or {}).get("frames_dropped") for r in rs],
                      "drawn": [(r["viewer"] or {}).get("frames_drawn") for r in rs],
                      "max_clients": [(r["viewer"] or {}).get("max_clients") for r in rs],
                      "client_mb": [r["client_bytes"] and round(r["client_bytes"] / 1e6, 2) for r in rs]}
               for name, rs in runs.items()}
    off = summary["off"]["fps_median"]
    for name in ("on", "on+client", "on+browser"):
        summary[name]["vs_off"] = summary[name]["fps_median"] / off if off else None
    result = {"frames": args.frames, "repeats": args.repeats, "engines": str(args.engines),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "cpus": len(__import__("os").sched_getaffinity(0)), "results": summary,
              "note": "CPU-only machine shared with other jobs (load average above the core count): runs are noisy; "
                      "the browser renders in software on the same cores (nice 19)"}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        def row(n: str, s: dict) -> str:
            vs = f"{s['vs_off']:.2f}" if s.get("vs_off") else "-"
            runs_ = ", ".join(f"{x:.2f}" for x in s["fps"])
            drops = ", ".join("-" if d is None else str(d) for d in s["dropped"])
            mb = ", ".join("-" if m is None else f"{m:.0f}" for m in s["client_mb"])
            return f"| {n} | {s['fps_median']:.2f} | {runs_} | {vs} | {drops} | {mb} |"

        rows = "\n".join(row(n, s) for n, s in summary.items())
        args.out.with_suffix(".md").write_text(
            f"# Live viewer: pipeline FPS off / on\n\n`python -m human3r_edge.benchmarks.viewer_fps --engines "
            f"{args.engines} --smplx-model {args.smplx_model} --frames {args.frames} --repeats {args.repeats}`\n\n"
            f"{result['machine']}, {result['cpus']} CPUs, ort-cpu, tiny random-weight model (128x96).\n\n"
            "| viewer | FPS (median) | FPS (runs) | vs off | frames dropped by the viewer (of " f"{args.frames}) "
            "| MB the client received |\n|---|---|---|---|---|---|\n"
            f"{rows}\n\n{result['note']}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
