"""What a golden folder says about itself: tests read every expectation here, never from a golden's name.

A golden is a folder with `golden.npz`, `config.json`, `checkpoint.pth` and `frames/` (see
`../shared/goldens/README.md`). Everything a test may need to know about its shape (steps, kept frames, reset
flags, resolutions, humans per step, the optional reference files) comes from those files, so a new golden of
another shape is tested without test edits.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Exported graphs keep at least this many human slots: the runtime's default is larger, tests keep exports small.
MIN_SLOTS = 4


def goldens_root() -> Path:
    """`$HUMAN3R_GOLDENS`, else `../shared/goldens` next to the repository."""
    env = os.environ.get("HUMAN3R_GOLDENS")
    return Path(env) if env else REPO.parent / "shared" / "goldens"


def golden_dirs() -> list[Path]:
    """Every golden folder (a folder holding golden.npz) under the goldens root, sorted."""
    root = goldens_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "golden.npz").is_file())


def references(golden_dir: Path) -> list[str]:
    """The reference npz files a golden holds: `golden.npz` always, `golden_nottt3r.npz` (TTT3R off) optionally."""
    return [name for name in ("golden.npz", "golden_nottt3r.npz") if (golden_dir / name).is_file()]


@dataclass(frozen=True)
class Golden:
    """The facts of one golden folder, read from its `golden.npz` (meta/*, key shapes) and `config.json`."""

    path: Path
    steps: int                    # S: model steps (frames + one overlap view after every reset)
    kept_step_index: np.ndarray   # (F,) int64: the step kept for each input frame
    reset_flags: np.ndarray       # (S,) bool: view['reset'] per step
    reset_interval: int           # the demo's --reset_interval
    use_ttt3r: bool
    threshold: float              # detection threshold
    size: int                     # the demo's --size (long side of the model image)
    mhmr_res: int                 # R: square MHMR input side
    image_hw: tuple[int, int]     # (H, W) of the model image
    raw_hw: tuple[int, int]       # (H, W) of the raw frames
    humans_per_step: np.ndarray   # (S,) int64
    humans_per_frame: np.ndarray  # (F,) int64
    config: dict                  # config.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def frames(self) -> int:
        """F: input frames (= kept steps)."""
        return len(self.kept_step_index)

    @property
    def max_humans(self) -> int:
        """The most humans detected in any step."""
        return int(self.humans_per_step.max()) if self.humans_per_step.size else 0

    @property
    def slots(self) -> int:
        """K for a test export: enough slots for every step's humans (so no detection is dropped)."""
        return max(MIN_SLOTS, self.max_humans)

    @property
    def tokens_hw(self) -> tuple[int, int]:
        """MHMR token grid (R/14, R/14)."""
        return self.mhmr_res // 14, self.mhmr_res // 14

    @property
    def constructor(self) -> dict:
        """The full constructor config (explicit kwargs plus defaults)."""
        return self.config["full_constructor_config_with_defaults"]

    @property
    def overlap_steps(self) -> np.ndarray:
        """Steps that are not kept (the overlap view the demo drops after each reset)."""
        return np.setdiff1d(np.arange(self.steps), self.kept_step_index)

    def step_of_human(self) -> np.ndarray:
        """(Nh,) step index of every human in `step/*`."""
        return np.repeat(np.arange(self.steps), self.humans_per_step)

    def kept_humans(self) -> np.ndarray:
        """(Nh,) bool: which rows of `step/smpl_*` belong to kept steps, i.e. appear in `demo/*` and `smplx/*`."""
        return np.isin(self.step_of_human(), self.kept_step_index)

    def demo_human_rows(self) -> np.ndarray:
        """(Nf,) for every human of `demo/*` / `smplx/*` (kept frames), its row in `step/*` (all model steps)."""
        return np.flatnonzero(self.kept_humans())

    def frame_of_step(self) -> dict[int, int]:
        """kept step index -> frame index."""
        return {int(s): f for f, s in enumerate(self.kept_step_index)}

    def model_config(self):
        """The runtime's `Human3RConfig`, parsed from the checkpoint's model string in config.json."""
        from human3r_edge.runtime.config import parse_model_string

        return parse_model_string(self.config["checkpoint_args_model_string"], name=self.name)

    def npz(self, name: str = "golden.npz"):
        return np.load(self.path / name)

    def reset_frames(self) -> list[bool]:
        """Per input frame: does the runtime reset its state after this frame? (`(f + 1) % reset_interval == 0`,
        the demo's rule, read back from the golden's flags on the kept steps)."""
        return [bool(self.reset_flags[s]) for s in self.kept_step_index]


@lru_cache(maxsize=None)
def golden(path: Path) -> Golden:
    """Read a golden folder's facts (cached)."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    with np.load(path / "golden.npz") as z:
        kept = np.asarray(z["meta/kept_step_index"], np.int64)
        img = z["input/img"].shape
        raw = z["input/raw_frames_uint8"].shape
        return Golden(
            path=path,
            steps=int(z["meta/num_model_steps"]),
            kept_step_index=kept,
            reset_flags=np.asarray(z["meta/reset_flags_per_step"], bool),
            reset_interval=int(z["meta/reset_interval"]),
            use_ttt3r=bool(z["meta/use_ttt3r"]),
            threshold=float(z["meta/detection_threshold"]),
            size=int(z["meta/size_arg"]),
            mhmr_res=int(z["meta/mhmr_img_res"]),
            image_hw=(int(img[2]), int(img[3])),
            raw_hw=(int(raw[1]), int(raw[2])),
            humans_per_step=np.asarray(z["step/n_humans"], np.int64),
            humans_per_frame=np.asarray(z["demo/n_humans"], np.int64),
            config=cfg,
        )
