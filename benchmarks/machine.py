"""One description of the machine a benchmark ran on, shared by every benchmark: CPU, memory, load and versions.

Benchmarks on a shared machine are noisy: `describe` records the load before a run, `cpu_snapshot` /
`foreign_cpu_share` measure how much of the CPU other processes took during it, and `quiet` says whether the
figures can be trusted (the markdown reports print a warning when not).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

QUIET_LOAD = 0.5  # 1-minute load average under which the machine counts as quiet before the run
QUIET_FOREIGN = 0.05  # largest share of the machine's CPU time that other processes may use during the run


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def loadavg() -> list[float]:
    """1/5/15-minute load averages (NaN where the platform has none)."""
    try:
        return [float(x) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return [float("nan")] * 3


def describe(threads: int | None = None) -> dict[str, Any]:
    """The machine, before a run: the same keys in every benchmark's results.

    cpu, cores, threads (the benchmark's intra-op threads, None when it does not set them), memory_bytes,
    platform, python, numpy, hypervisor (lscpu's vendor, '' on bare metal or without lscpu), loadavg_before.
    """
    hypervisor = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        hypervisor = fields.get("Hypervisor vendor", "").strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "memory_bytes": memory_bytes(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "hypervisor": hypervisor, "loadavg_before": loadavg()}


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its children) for `foreign_cpu_share`."""
    busy = 0.0
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(vals[:8]) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.time(), busy, t.user + t.system + t.children_user + t.children_system


def foreign_cpu_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Share of the machine's CPU capacity used by OTHER processes between two snapshots (0 = quiet).

    The load average after a run includes the benchmark's own threads, so it cannot tell whether the machine
    was shared; this can.
    """
    wall = after[0] - before[0]
    if wall <= 0 or before[1] == 0:
        return 0.0
    foreign = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, foreign / (wall * (os.cpu_count() or 1)))


def finish(info: dict[str, Any], before: tuple[float, float, float]) -> dict[str, Any]:
    """`info` (from `describe`) completed after the run: loadavg_after, foreign_cpu_share and quiet."""
    share = foreign_cpu_share(before, cpu_snapshot())
    out = dict(info)
    out["loadavg_after"] = loadavg()
    out["foreign_cpu_share"] = share
    out["quiet"] = bool(out["loadavg_before"][0] < QUIET_LOAD and share < QUIET_FOREIGN)
    return out


def versions(dists: tuple[str, ...] = ("torch", "onnxruntime-gpu", "onnx", "tensorrt", "smplx", "human3r-edge")
             ) -> dict[str, Any]:
    """Python, numpy, the given distributions' versions (None when absent) and the git commit of the checkout."""
    from importlib import metadata

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        repo = Path(__file__).resolve().parents[1]
        out["git_commit"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out
