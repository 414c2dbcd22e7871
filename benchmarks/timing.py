"""Per-stage wall-clock accumulation and percentile summaries for the benchmarks."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

class StageClock:
    """Per-frame accumulator of milliseconds per stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, stage: str, ms: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + ms

    def take(self) -> dict[str, float]:
        out, self.ms = self.ms, {}
        return out


def timed(fn: Callable[..., Any], clock: StageClock, stage: str) -> Callable[..., Any]:
    """`fn` wrapped so that its wall time is added to `stage` of `clock`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.add(stage, (time.perf_counter() - tic) * 1e3)

    return wrapper


def percentiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()),
            "max": float(a.max())}
