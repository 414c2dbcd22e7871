"""Shared checks of multi-stream backends (issue #16) on the toy export: used by tests/test_backend_streams.py
(ort-cpu, the ort-cuda stand-in) and tests/test_trt_streams.py (native TensorRT on the CPU stand-in).

A schedule is a list of batches, each the stream slots present in that step in batch order. Stream slot s plays
the frames of `toy_feeds(single, f, seed=s)`, f counting its own frames; every batch row must equal the
single-stream export's run of that stream (same weights, same seed) within 3e-5 * max|ref|, and the state rows
of absent slots must stay bit-identical (np.array_equal on read_state).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.iospec import ExportSpec
from support.toy_export import stack_rows, toy_feeds, unbatched, write_toy_export

SCHEDULE = [[2, 0, 1], [1], [0, 2], [2, 1, 0], [1, 2], [0]]
STATE = ("state", "mem")
RTOL = 3e-5


def frames_per_stream(schedule: list[list[int]], n: int) -> list[int]:
    return [sum(s in b for b in schedule) for s in range(n)]


def write_pair(root: Path, streams: int = 3) -> tuple[Path, Path]:
    """A single-stream toy export and a multi-stream one with the same weights."""
    one, many = root / "one", root / f"streams{streams}"
    write_toy_export(one)
    write_toy_export(many, streams=streams)
    return one, many


def single_reference(backend_factory, one: Path, streams: int, frames: int) -> dict:
    """{slot: [per frame: outputs of every graph + state after the frame]} from the single-stream export."""
    spec = ExportSpec.load(one)
    ref: dict[int, list[dict[str, np.ndarray]]] = {}
    for s in range(streams):
        with backend_factory(one) as be:
            rows = []
            for f in range(frames):
                feeds = toy_feeds(spec, f, s)
                out: dict[str, np.ndarray] = {}
                for g in spec.graphs:
                    out.update(be.run(g.name, feeds[g.name]))
                out.update({f"read:{k}": be.read_state(k) for k in STATE})
                rows.append(out)
            ref[s] = rows
    return ref


def close(got: Any, ref: Any, what: str, tol: float = RTOL) -> None:
    """max |got - ref| <= tol * max |ref| (arrays or lists of equal-shape arrays)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= tol * max(scale, 1e-30) or err == 0.0, f"{what}: max err {err:.3g} > {tol} * {scale:.3g}"


def run_batch(be, spec: ExportSpec, slots: list[int], frames: list[int]) -> dict[str, np.ndarray]:
    """One step of every graph for the streams of `slots` (row i: stream slots[i] at its frame frames[i])."""
    single = unbatched(spec)
    per = [toy_feeds(single, f, s) for s, f in zip(slots, frames)]
    out: dict[str, np.ndarray] = {}
    for g in spec.graphs:
        out.update(be.run(g.name, stack_rows(spec, g.name, [p[g.name] for p in per]), slots=slots))
    return out


def drive_schedule(be, spec: ExportSpec, ref: dict, schedule: list[list[int]] = SCHEDULE) -> int:
    """Run `schedule` on an active multi-stream backend; assert rows vs `ref` and absent rows bit-identical.
    Returns the number of state rows checked bit-identical."""
    n = spec.streams
    count = [0] * n
    identical = 0
    for step, slots in enumerate(schedule):
        before = {k: be.read_state(k) for k in STATE}
        out = run_batch(be, spec, slots, [count[s] for s in slots])
        after = {k: be.read_state(k) for k in STATE}
        for i, s in enumerate(slots):
            want = ref[s][count[s]]
            for name, value in out.items():
                assert value.shape[0] == len(slots), f"{name}: axis 0 is {value.shape[0]}, batch {len(slots)}"
                close(value[i], np.asarray(want[name]).reshape(value.shape[1:]), f"step {step} slot {s} {name}")
            for k in STATE:
                close(after[k][s], want[f"read:{k}"][0], f"step {step} slot {s} state {k}")
        for s in range(n):
            if s not in slots:
                for k in STATE:
                    assert np.array_equal(after[k][s], before[k][s]), f"step {step}: absent slot {s} {k} changed"
                    identical += 1
        for s in slots:
            count[s] += 1
    return identical


def check_reset_rows(be, spec: ExportSpec, ref: dict, initial: dict[str, np.ndarray]) -> None:
    """reset_streams([1]) restores row 1 only; stream 1 then replays its frame 0."""
    before = {k: be.read_state(k) for k in STATE}
    assert not all(np.array_equal(before[k][1], initial[k][0]) for k in STATE), "row 1 never moved: vacuous"
    be.reset_streams([1])
    after = {k: be.read_state(k) for k in STATE}
    for k in STATE:
        assert np.array_equal(after[k][1], initial[k][0]), f"{k} row 1 not reset"
        for s in (0, 2):
            assert np.array_equal(after[k][s], before[k][s]), f"{k} row {s} touched by reset_streams([1])"
    out = run_batch(be, spec, [1], [0])
    for name, value in out.items():
        close(value[0], np.asarray(ref[1][0][name]).reshape(value.shape[1:]), f"after reset {name}")
    be.reset_state()
    for k in STATE:
        assert np.array_equal(be.read_state(k), np.repeat(initial[k], spec.streams, axis=0))


_CACHE: dict[tuple, Path] = {}


def golden_stream_pair(tmp_factory, golden_dir: Path, streams: int = 3) -> tuple[Path, Path]:
    """The real exporter's single-stream and `streams`-stream exports of a golden's checkpoint (FP32 only), made
    once per pytest run (support.exports.golden_export's, shared with the export and multi-stream tests)."""
    from .exports import golden_export

    return golden_export(tmp_factory, golden_dir), golden_export(tmp_factory, golden_dir, streams=streams)
