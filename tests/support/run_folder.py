"""A small run folder from `human3r-edge run` over the fake export backend (no model weights, ~1 s of work).

Fake backend: focal 100 px, random people and points; with the synthetic SMPL-X model every output file a real
run writes exists, with the same conventions, but the geometry is not real.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SRC_WH = (200, 150)  # the source video; it preprocesses (resize only, no crop) to the 128x96 model image


def make_run_folder(tmp: Path, smplx: Path, frames: int = 12, extra: tuple[str, ...] = ()) -> Path:
    """Run the CLI in-process on a synthetic video into tmp/run and return that folder."""
    from human3r_edge.cli import main
    from human3r_edge.runtime.backends import BACKENDS
    from support.doubles import write_fake_export
    from support.run_cli import write_video

    src = write_video(tmp / "v.mp4", n=frames, w=SRC_WH[0], h=SRC_WH[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BACKENDS, "ort-cpu", "support.doubles:FakeExportBackend")
        # every point kept (the fake confidence and mask would drop them): a scene.ply to export and view
        rc = main(["run", str(src), "--engines", str(write_fake_export(tmp / "export")), "--smplx-model", str(smplx),
                   "--backend", "ort-cpu", "--out", str(tmp / "run"), "--no-progress", "--save-depth",
                   "--conf-threshold", "-1", "--mask-threshold", "2", "--reset-interval", "6", *extra])
    if rc != 0:
        raise RuntimeError(f"human3r-edge run failed with exit {rc}")
    return tmp / "run"
