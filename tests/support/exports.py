"""Real ONNX exports shared by the exporter's tests: one per (source, K, lean, fp16), made once per pytest run."""
from __future__ import annotations

from pathlib import Path

_CACHE: dict[tuple, Path] = {}


def golden_export(tmp_factory, golden_dir: Path, max_people: int | None = None, lean: bool = False,
                  fp16: bool = False, streams: int = 1) -> Path:
    """`export_model` of the golden's checkpoint at the golden's resolution (cached for the session).

    max_people: K slots; default: enough for the golden's most crowded step (`Golden.slots`), so no person is dropped.
    streams: N of `export --streams N` (multi-stream graphs; 1 = the single-stream graphs).
    """
    import numpy as np

    from human3r_edge.export.onnx_export import ExportOptions, export_model, load_source

    from .goldens import golden

    if max_people is None:
        max_people = golden(golden_dir).slots

    key = ("golden", str(golden_dir), max_people, lean, fp16, streams)
    if key not in _CACHE:
        with np.load(golden_dir / "golden.npz") as z:
            _, _, h, w = z["input/img"].shape
        model, sha, source = load_source(golden_dir / "checkpoint.pth", None, False)
        out = tmp_factory.mktemp(f"export_{golden_dir.name}_k{max_people}{'_lean' if lean else ''}"
                                 f"{'_fp16' if fp16 else ''}{f'_streams{streams}' if streams > 1 else ''}")
        export_model(model, out, ExportOptions(int(w), int(h), max_people, lean, fp16, streams=streams), sha, source,
                     quiet=True)
        _CACHE[key] = out
    return _CACHE[key]


def random_tiny_export(tmp_factory, width: int = 128, height: int = 96, max_people: int = 4, seed: int = 0,
                       fp16: bool = False) -> Path:
    """Export of the seeded random-weight tiny model (no goldens needed), cached for the session."""
    from human3r_edge.export.onnx_export import ExportOptions, export_model, load_source

    key = ("random", width, height, max_people, seed, fp16)
    if key not in _CACHE:
        model, sha, source = load_source(None, "tiny", True, seed)
        out = tmp_factory.mktemp(f"export_tiny_random_{width}x{height}_k{max_people}")
        export_model(model, out, ExportOptions(width, height, max_people, fp16=fp16), sha, source, quiet=True)
        _CACHE[key] = out
    return _CACHE[key]
