"""Start and stop the `tritonserver` bundled in the nvidia-pytriton wheel (installed by setup_env.py), directly:

    tritonserver --model-repository REPO --backend-directory <bundle>/backends --http-port P --grpc-port P2
                 --metrics-port P3

with the bundle's libraries on LD_LIBRARY_PATH, PYTHONHOME unset (the Python backend stub embeds the system
libpython3.11, whose own standard library it must use) and, on PYTHONPATH, the model's environment (numpy < 2) and
the folder holding the `human3r_edge` package. Readiness is Triton's `/v2/health/ready`. The server (and its backend
stubs) run in their own process group, stopped with SIGTERM (Triton unloads the models and exits), then SIGKILL.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.triton.setup_env import default_home, is_installed, server_root

INSTALL_HINT = "run `make setup` (or `python -m human3r_edge.runtime.triton.setup_env`)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_ready(url: str, timeout: float = 2.0) -> bool:
    """Triton's readiness endpoint: every model loaded and the server accepting requests."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=timeout) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_env(home: Path) -> dict[str, str]:
    import human3r_edge

    root = server_root(home)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    libs = str(home / "server" / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, str(root / "backends" / "python"),
                                                         env.get("LD_LIBRARY_PATH", "")) if p)
    package_parent = str(Path(human3r_edge.__file__).resolve().parent.parent)
    # the stub's embedded interpreter ignores PYTHONPATH: the repository's model.py reads this one
    env["HUMAN3R_TRITON_PYTHONPATH"] = os.pathsep.join([str(home / "model-site"), package_parent])
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


class TritonServer:
    """One tritonserver process over a model repository. Use as a context manager, or start()/stop()."""

    def __init__(self, repo: str | Path, host: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None, home: str | Path | None = None,
                 log_file: str | Path | None = None, verbose: int = 0, exit_timeout: int = 5) -> None:
        self.repo = Path(repo).resolve()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.home = Path(home) if home is not None else default_home()
        self.log_file = Path(log_file) if log_file is not None else None
        self.verbose = verbose
        self.exit_timeout = int(exit_timeout)  # Triton waits this long for live sequences / requests on SIGTERM
        self.proc: subprocess.Popen | None = None
        self._log: IO[Any] | None = None

    @property
    def url(self) -> str:
        """host:port of the HTTP endpoint (what `run --backend triton --url` takes)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        root = server_root(self.home)
        return [str(root / "bin" / "tritonserver"), "--model-repository", str(self.repo),
                "--backend-directory", str(root / "backends"),
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
                "--allow-metrics", "true", "--allow-cpu-metrics", "true", "--allow-gpu-metrics", "false",
                "--exit-on-error", "true", f"--exit-timeout-secs={self.exit_timeout}", "--strict-readiness", "true",
                f"--log-verbose={self.verbose}"]

    def start(self, timeout: float = 120.0) -> "TritonServer":
        if not is_installed(self.home):
            raise BackendUnavailable(msg("tritonserver", "not installed", str(self.home), hint=INSTALL_HINT))
        if not (self.repo / "human3r" / "config.pbtxt").is_file() and not any(self.repo.glob("*/config.pbtxt")):
            raise Human3RError(msg("--repo", "not a Triton model repository (no */config.pbtxt)", str(self.repo),
                                   hint="write one with `human3r-edge triton-repo`"))
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.command(), env=server_env(self.home), stdin=subprocess.DEVNULL,
                                     stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BackendUnavailable(msg("tritonserver", "exited before it was ready",
                                             f"exit code {self.proc.returncode}", hint=self._log_hint()))
            if is_ready(self.url, timeout=1.0):
                return
            time.sleep(0.2)
        raise BackendUnavailable(msg("tritonserver", "not ready in time", f"{timeout:g} s", hint=self._log_hint()))

    def _log_hint(self) -> str:
        return f"see its log {self.log_file}" if self.log_file else "rerun with a log file (--log FILE)"

    def kill(self) -> None:
        """SIGKILL the server and its backend stubs (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (Triton unloads the models and exits), SIGKILL after `timeout` (default: Triton's exit timeout
        + 15 s); returns the exit code."""
        timeout = self.exit_timeout + 15.0 if timeout is None else timeout
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        try:  # stubs left in the group (they exit with the server; never leave one behind)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
