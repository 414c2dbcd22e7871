"""`human3r-edge triton-server --repo REPO [--http-port P]`: start the tritonserver bundled by `make setup` (the
nvidia-pytriton wheel, see runtime/triton/setup_env.py) on a repository, wait for /v2/health/ready, print the URL
and serve until SIGINT / SIGTERM, then stop it cleanly (Triton unloads the models; exit 0).

Metrics (Triton's own and the model's human3r_* gauges and counters) are on Triton's metrics port:
http://HOST:METRICS_PORT/metrics.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, required=True, metavar="REPO", help="model repository (triton-repo)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 to serve other machines)")
    p.add_argument("--http-port", type=int, default=8000, metavar="P", help="HTTP port (clients' --url HOST:P)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="P", help="gRPC port")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="P", help="Prometheus metrics port")
    p.add_argument("--log", type=Path, default=None, metavar="FILE", help="server log file (default: discarded)")
    p.add_argument("--verbose", type=int, default=0, help="Triton's --log-verbose level")
    p.add_argument("--ready-timeout", type=float, default=300.0, metavar="S", help="how long loading may take")


def main(args: argparse.Namespace) -> int:
    from human3r_edge.runtime.triton.server import TritonServer

    server = TritonServer(args.repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, log_file=args.log, verbose=args.verbose)
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start(args.ready_timeout)
        if stop.is_set():
            return 128 + int(signal.Signals[received[0]])
        print(f"human3r-edge triton-server | ready: http://{server.url} (grpc {args.host}:{server.grpc_port}, "
              f"metrics {server.metrics_url}); clients: human3r-edge run SOURCE --backend triton --url {server.url}",
              flush=True)
        while not stop.wait(0.5):
            if not server.running:
                code = server.proc.returncode if server.proc is not None else None
                print(f"human3r-edge triton-server | the server exited (code {code})", file=sys.stderr)
                return 1
        code = server.stop()
        print(f"human3r-edge triton-server | stopped ({received[0]}), tritonserver exit code {code}", flush=True)
        return 0 if code == 0 else 1
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
