"""Reading an SMPL-X model file (`SMPLX_NEUTRAL.npz`, or a `.pkl` through a numpy-only unpickler) without torch.

The official `.npz` carries object arrays (`joint2num`, `part2num`) that only pickle can read. They are never
needed and never unpickled: the archive is opened with `allow_pickle=False` and only the arrays listed in
`REQUIRED` are read. The `.pkl` distribution is read by `_NumpyOnlyUnpickler`, which admits numpy arrays,
numpy scalars, builtin containers and a scipy CSC matrix (the official pickle stores `J_regressor` that way);
the CSC matrix becomes an inert record that we densify ourselves, and `_codecs.encode` is admitted only to turn
a latin-1 string into bytes (how Python 3 stores bytes in protocol 0-2). Every other global is refused.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from human3r_edge.errors import CheckpointError, Human3RError, msg
from human3r_edge.runtime.smplx.constants import (NUM_BETAS, NUM_EXPR, NUM_JOINTS, NUM_LANDMARKS, NUM_POSE_FEATURES, NUM_VERTS, PARENTS,
                        SHAPE_SPACE_DIM)

_GET_MODEL = ("download SMPLX_NEUTRAL.npz from https://smpl-x.is.tue.mpg.de (models_smplx_v1_1), or write a "
              "synthetic one with human3r_edge.runtime.smplx.synthetic.write_synthetic_smplx")

# key -> (shape with None for "any", dtype kinds accepted)
REQUIRED: dict[str, tuple[tuple[int | None, ...], str]] = {
    "v_template": ((NUM_VERTS, 3), "f"),
    "f": ((None, 3), "iu"),
    "shapedirs": ((NUM_VERTS, 3, None), "f"),
    "posedirs": ((NUM_VERTS, 3, NUM_POSE_FEATURES), "f"),
    "J_regressor": ((NUM_JOINTS, NUM_VERTS), "f"),
    "weights": ((NUM_VERTS, NUM_JOINTS), "f"),
    "kintree_table": ((2, NUM_JOINTS), "iu"),
    "lmk_faces_idx": ((NUM_LANDMARKS,), "iu"),
    "lmk_bary_coords": ((NUM_LANDMARKS, 3), "f"),
}


@dataclass(frozen=True)
class SMPLXData:
    """The arrays of an SMPL-X model that skinning needs, validated, in the file's float precision.

    Shapes: V = 10475 vertices, F faces, J = 55 joints. Arrays are owned by this object; treat them as read-only.
    """

    v_template: np.ndarray  # (V, 3) rest-pose vertices
    faces: np.ndarray  # (F, 3) int64 vertex indices
    shapedirs: np.ndarray  # (V, 3, 20): 10 shape PCs then 10 expression PCs, the columns smplx uses
    posedirs: np.ndarray  # (V, 3, 486): pose correctives, feature index (j-1)*9 + 3*row + col of (R_j - I)
    j_regressor: np.ndarray  # (J, V) dense joint regressor
    weights: np.ndarray  # (V, J) skinning weights
    parents: np.ndarray  # (J,) int64, -1 at the root
    lmk_faces_idx: np.ndarray  # (51,) int64 face of each static landmark
    lmk_bary_coords: np.ndarray  # (51, 3) barycentric coordinates in that face
    source: str = ""  # the file it came from


# ------------------------------------------------------------------------------------------ entry point
def load_smplx_file(path: str | os.PathLike) -> SMPLXData:
    """Read and validate an SMPL-X model file (.npz as published, or .pkl through the numpy-only unpickler).

    Raises CheckpointError on a missing, truncated or unsafe file, a missing key, a wrong shape or dtype, or
    non-finite values. Nothing in the file is ever executed.
    """
    p = Path(path)
    what = f"SMPL-X model {p}"
    if p.is_dir():
        p = p / "SMPLX_NEUTRAL.npz"
        what = f"SMPL-X model {p}"
    if not p.is_file():
        raise CheckpointError(msg(what, "file not found", str(p), "an SMPLX_NEUTRAL.npz file", _GET_MODEL))
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK":
        arrays = _read_npz(p, what)
    elif p.suffix == ".pkl" or head[:1] in (b"\x80", b"("):
        arrays = _read_pkl(p, what)
    else:
        raise CheckpointError(msg(what, "not an .npz archive or a pickle", f"first bytes {head!r}",
                                  "a zip archive (.npz) or a protocol 0-5 pickle (.pkl)", _GET_MODEL))
    return _validate(arrays, what, str(p))


# ------------------------------------------------------------------------------------------ .npz
def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    from human3r_edge.runtime.integrity import check_zip

    # Every member's CRC-32 first: np.load checks one only when it reads a member to its end, so a flipped byte in
    # an .npy header (a shape that reads fewer bytes) or in the data would otherwise go unnoticed.
    try:
        check_zip(path, what)
    except Human3RError as exc:
        raise CheckpointError(str(exc)) from exc
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(msg(what, "truncated or corrupt archive", repr(exc), "a complete .npz file",
                                  "download the file again; its size should match the published one")) from exc
    out: dict[str, np.ndarray] = {}
    with z:
        missing = sorted(set(REQUIRED) - set(z.files))
        if missing:
            raise CheckpointError(msg(what, "missing keys", missing, f"all of {sorted(REQUIRED)}",
                                      "this is not an SMPL-X model file"))
        for key in REQUIRED:
            try:
                out[key] = z[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                    raise CheckpointError(msg(what, f"key {key!r} is a pickled object array", "dtype object",
                                              f"a numeric array of shape {REQUIRED[key][0]}",
                                              "object arrays are never unpickled")) from exc
                raise CheckpointError(msg(what, f"key {key!r} is unreadable", repr(exc), hint=_GET_MODEL)) from exc
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise CheckpointError(msg(what, f"truncated or corrupt data in key {key!r}", repr(exc),
                                          "a complete .npz file", "download the file again")) from exc
    return out


# ------------------------------------------------------------------------------------------ .pkl
class _CscRecord:
    """Inert stand-in for a pickled scipy.sparse CSC matrix: it only stores the state the pickle hands it."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if not isinstance(state, dict):
            raise CheckpointError(msg("pickled csc_matrix", "unexpected state", type(state).__name__, "a dict"))
        self.state = dict(state)

    def to_dense(self) -> np.ndarray:
        s = getattr(self, "state", {})
        shape = s.get("_shape", s.get("shape"))
        data, indices, indptr = s.get("data"), s.get("indices"), s.get("indptr")
        if not (isinstance(shape, tuple) and len(shape) == 2 and isinstance(data, np.ndarray)
                and isinstance(indices, np.ndarray) and isinstance(indptr, np.ndarray)):
            raise CheckpointError(msg("pickled csc_matrix", "incomplete state", sorted(s),
                                      "_shape, data, indices, indptr"))
        rows, cols = int(shape[0]), int(shape[1])
        indptr = indptr.astype(np.int64)
        indices = indices.astype(np.int64)
        ok = (len(indptr) == cols + 1 and indptr[0] == 0 and np.all(np.diff(indptr) >= 0)
              and indptr[-1] == len(indices) == len(data) and (len(indices) == 0 or
                                                               (indices.min() >= 0 and indices.max() < rows)))
        if not ok:
            raise CheckpointError(msg("pickled csc_matrix", "inconsistent index arrays", f"shape {shape}"))
        dense = np.zeros((rows, cols), dtype=np.float64)
        col_of = np.repeat(np.arange(cols), np.diff(indptr))
        np.add.at(dense, (indices, col_of), data.astype(np.float64))
        return dense


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*_: Any, **__: Any) -> Any:
        raise CheckpointError(msg("SMPL-X pickle", "refused construction", what))
    return refused


def _safe_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(obj, str) or obj.lstrip("<>|=")[:1] in ("O", "V"):
        raise CheckpointError(msg("SMPL-X pickle", "refused dtype", repr(obj), "a numeric dtype such as 'f8'",
                                  "object and structured arrays are never unpickled"))
    d = np.dtype(obj, align, copy)
    if d.kind not in "biufSU":
        raise CheckpointError(msg("SMPL-X pickle", "refused dtype", str(d), "a numeric dtype"))
    return d


def _safe_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise CheckpointError(msg("SMPL-X pickle", "refused array subclass", repr(cls), "numpy.ndarray"))
    return np.ndarray((0,), dtype=np.uint8)  # numpy's __setstate__ (BUILD) replaces shape, dtype and data


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise CheckpointError(msg("SMPL-X pickle", "refused scalar", repr(dtype), "a numeric numpy scalar"))
    raw = data.encode("latin1") if isinstance(data, str) else bytes(data)
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if cls is not _CscRecord or base is not object or state is not None:
        raise CheckpointError(msg("SMPL-X pickle", "refused copy_reg._reconstructor call", repr(cls)))
    return _CscRecord.__new__(_CscRecord)


def _safe_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes into protocol 0-2 pickles as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(msg("SMPL-X pickle", "refused _codecs.encode call", repr(encoding)))
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {("_codecs", "encode"): _safe_encode}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _safe_reconstruct
    _ALLOWED[(_mod, "scalar")] = _safe_scalar
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _safe_dtype
for _mod in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _ALLOWED[(_mod, "csc_matrix")] = _CscRecord
    _ALLOWED[(_mod, "csc_array")] = _CscRecord
for _mod in ("copy_reg", "copyreg"):
    _ALLOWED[(_mod, "_reconstructor")] = _safe_reconstructor
for _mod in ("__builtin__", "builtins"):
    _ALLOWED[(_mod, "object")] = object


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose globals are the guarded numpy/CSC constructors above, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(msg("SMPL-X pickle", "refused global", f"{module}.{name}",
                                      "numpy arrays and a scipy CSC J_regressor only",
                                      "use the official SMPLX_NEUTRAL.npz (nothing in it is unpickled); "
                                      "chumpy-based pickles are not supported")) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(msg("SMPL-X pickle", "refused persistent id", repr(pid)[:80]))


def _read_pkl(path: Path, what: str) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: {exc}") from exc
    except Exception as exc:  # any failure inside the unpickler means the bytes are not a sound pickle
        raise CheckpointError(msg(what, "truncated or corrupt pickle", repr(exc)[:200], "a complete .pkl file",
                                  "download the file again, or use the official .npz")) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(msg(what, "pickle does not hold a dict", type(obj).__name__, "a dict of arrays"))
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key not in REQUIRED:
            continue
        if isinstance(value, _CscRecord):
            value = value.to_dense()
        if not isinstance(value, np.ndarray):
            raise CheckpointError(msg(what, f"key {key!r} is not an array", type(value).__name__,
                                      f"a numeric array of shape {REQUIRED[key][0]}"))
        out[key] = value
    missing = sorted(set(REQUIRED) - set(out))
    if missing:
        raise CheckpointError(msg(what, "missing keys", missing, f"all of {sorted(REQUIRED)}",
                                  "this is not an SMPL-X model file"))
    return out


# ------------------------------------------------------------------------------------------ validation
def _check_array(what: str, key: str, a: np.ndarray) -> None:
    shape, kinds = REQUIRED[key]
    if a.dtype.kind not in kinds:
        raise CheckpointError(msg(what, f"key {key!r} has the wrong dtype", str(a.dtype),
                                  "a float array" if kinds == "f" else "an integer array"))
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise CheckpointError(msg(what, f"key {key!r} has the wrong shape", a.shape, f"shape {want}",
                                  "SMPL-X has 10475 vertices and 55 joints; SMPL/SMPL-H files are not SMPL-X"))
    if kinds == "f" and not np.all(np.isfinite(a)):
        raise CheckpointError(msg(what, f"key {key!r} holds NaN or inf", int(np.size(a) - np.isfinite(a).sum()),
                                  "finite values", "the file is damaged"))


def _validate(arrays: dict[str, np.ndarray], what: str, source: str) -> SMPLXData:
    for key in REQUIRED:
        _check_array(what, key, arrays[key])
    faces = arrays["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise CheckpointError(msg(what, "face indices out of range", (int(faces.min()), int(faces.max())),
                                  f"0..{NUM_VERTS - 1}"))
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the root is stored as uint32(-1) = 4294967295 (or -1)
    if not np.array_equal(parents, PARENTS):
        raise CheckpointError(msg(what, "kinematic tree differs from SMPL-X", parents.tolist(),
                                  PARENTS.tolist(), "this is not an SMPL-X model file"))
    lmk = arrays["lmk_faces_idx"].astype(np.int64)
    if lmk.min() < 0 or lmk.max() >= len(faces):
        raise CheckpointError(msg(what, "landmark face indices out of range", (int(lmk.min()), int(lmk.max())),
                                  f"0..{len(faces) - 1}"))
    sd = arrays["shapedirs"]
    n = sd.shape[2]
    # the column choice of the smplx package: 400 columns -> expression from 300; fewer -> from 10
    expr0 = SHAPE_SPACE_DIM if n >= 400 else NUM_BETAS
    if n < expr0 + NUM_EXPR:
        raise CheckpointError(msg(what, "shapedirs has too few components", n,
                                  f">= {NUM_BETAS + NUM_EXPR} (10 shape + 10 expression)"))
    shapedirs = np.concatenate([sd[:, :, :NUM_BETAS], sd[:, :, expr0:expr0 + NUM_EXPR]], axis=2)
    return SMPLXData(
        v_template=np.ascontiguousarray(arrays["v_template"]),
        faces=faces,
        shapedirs=np.ascontiguousarray(shapedirs),
        posedirs=np.ascontiguousarray(arrays["posedirs"]),
        j_regressor=np.ascontiguousarray(arrays["J_regressor"]),
        weights=np.ascontiguousarray(arrays["weights"]),
        parents=parents,
        lmk_faces_idx=lmk,
        lmk_bary_coords=np.ascontiguousarray(arrays["lmk_bary_coords"]),
        source=source,
    )
