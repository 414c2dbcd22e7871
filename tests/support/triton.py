"""The Triton serving fixture's pieces: is the bundled server installed (`make setup`), a python-flavour repository
over a golden's ONNX export, and a server on 127.0.0.1 with free ports that a test may kill and restart."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .ci import require

SHORT_IDLE_MODEL = "human3r_idle"  # a second model in the same repository with a short idle timeout
SHORT_IDLE_S = 2.5


def require_triton() -> None:
    """Skip here, fail under CI=true, when the server bundle or the client is missing."""
    from human3r_edge.runtime.triton.setup_env import default_home, is_installed

    try:
        import tritonclient.http  # noqa: F401

        client = True
    except ImportError:
        client = False
    require(client, "tritonclient[http] is not installed (pip install -e '.[serve]')")
    require(is_installed(default_home()), f"the bundled tritonserver is not installed in {default_home()} "
            "(python -m human3r_edge.runtime.triton.setup_env)")


STREAMS = 4  # the multi-stream export's N: the most sequences `human3r` holds at once
_EXPORTS: dict[tuple, Path] = {}


def multi_stream_export(tmp_factory, golden_dir: Path, streams: int = STREAMS) -> Path:
    """The golden's checkpoint exported with `--streams N` (cached for the pytest session)."""
    from .exports import golden_export

    return golden_export(tmp_factory, golden_dir, streams=streams)


def write_repo(root: Path, multi_export: Path, single_export: Path, smplx: Path) -> Path:
    """Two models: `human3r` over the multi-stream export (every batch of sequences one batched MultiSession step;
    dense, SMPL-X, 60 s idle) and SHORT_IDLE_MODEL over the single-stream export (one Session per sequence,
    2.5 s idle)."""
    from human3r_edge.runtime.triton.repo import PythonRepoOptions, write_python_repo

    repo = root / "repo"
    write_python_repo(multi_export, repo, PythonRepoOptions(max_sequences=STREAMS, dense=True, idle_seconds=60),
                      smplx)
    write_python_repo(single_export, repo, PythonRepoOptions(max_sequences=2, idle_seconds=SHORT_IDLE_S), None,
                      model_name=SHORT_IDLE_MODEL)
    return repo


def interleaved_frames(frames: np.ndarray, n: int = 3) -> list[np.ndarray]:
    """n different frame orders of the golden's frames (so a misrouted frame changes a sequence's results)."""
    f = list(frames)
    orders = [f, f[::-1], f[2:] + f[:2], f[1::2] + f[0::2]]
    return [np.stack(orders[i % len(orders)]) for i in range(n)]


def close(got, ref, tol: float = 3e-5) -> float:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    err = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref)))
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol} * {scale:.3g}"
    return err / scale if scale else 0.0


def assert_same_results(got: list, ref: list, tol: float = 3e-5, id_offset: int = 0, dense: bool = True) -> None:
    """Served results equal local ones: identical track ids, every array within tol * max|ref|."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert [i - id_offset for i in g.track_ids] == r.track_ids, (g.index, g.track_ids, r.track_ids)
        assert g.segment == r.segment
        close(g.c2w, r.c2w, tol)
        close(g.intrinsics, r.intrinsics, tol)
        np.testing.assert_array_equal(g.image, r.image)
        for a, b in zip(g.people, r.people):
            for name in ("rotmat", "betas", "expression", "transl", "head_uv", "vertices_cam", "vertices_world",
                         "joints_world", "smplx_transl"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None), name
                if y is not None:
                    close(x, y, tol)
        if dense:
            close(g.depth, r.depth, tol)
            close(g.points_world, r.points_world, tol)
