"""`human3r-edge compare OUT.npz GOLDEN.npz`: per-key error report against a golden, with per-key tolerances.

For each key present in both files it prints the max absolute error and `rel` = max|out - ref| / max|ref|
(the goldens' metric), then a last line `PASSED` or `FAILED` naming the worst key; exit status 1 on failure.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from human3r_edge.errors import Human3RError, msg

# Tolerance per key, relative to max|ref| of that key: pass when max|out - ref| <= tol * max|ref|.
# The "" entry is the default; a key ending in "/" applies to every key under that prefix; exact keys win.
# Integer and bool keys are always compared exactly.
TOLERANCES: dict[str, float] = {
    "": 3e-5,
    # Debug-only raw encoder tokens (and the decoder tokens built on them): q/k are stored in float16 around
    # RoPE, so last-bit GEMM differences between CPUs flip float16 roundings. Measured 2.7e-5 / 2.2e-5 on an
    # AVX2 AMD EPYC against goldens recorded elsewhere; the golden README allows 1e-4 for this effect.
    "inter/enc_tokens": 1e-4,
    "inter/dec_last_tokens_concat": 1e-4,
}
# Rotation vectors near |angle| = pi flip sign between conventions; they are compared as rotation matrices.
ROTVEC_KEYS = ("demo/smpl_rotvec",)
# Keys an output must carry: every golden key under these prefixes.
REQUIRED_PREFIXES = ("step/", "demo/", "smplx/")


# NMS score maps: a cell below the detection threshold in both maps decides nothing (nothing reads it), but a
# reduced-precision (FP16) run may break an NMS near-tie there and move a whole sub-threshold score to a neighbour
SCORE_MAP_KEYS = ("step/smpl_scores", "demo/smpl_scores_fullres")


def mask_undecided_scores(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, int]:
    """Zero, in both `out` and `ref` (replaced in place by new arrays), the score-map cells below the detection
    threshold (`meta/detection_threshold` of `ref`, else 0.3) in both maps, so the maps compare where they decide.
    Returns the number of sub-threshold NMS peaks that moved, per key (reported, not failed)."""
    threshold = float(np.asarray(ref.get("meta/detection_threshold", 0.3)).reshape(-1)[0])
    moved = {}
    for key in SCORE_MAP_KEYS:
        if key in out and key in ref and np.shape(out[key]) == np.shape(ref[key]):
            a, b = np.asarray(out[key], np.float32), np.asarray(ref[key], np.float32)
            below = (a < threshold) & (b < threshold)
            moved[key] = int(np.count_nonzero(below & ((a > 0) != (b > 0))))
            out[key] = np.where(below, 0.0, a).astype(np.float32)
            ref[key] = np.where(below, 0.0, b).astype(np.float32)
    return moved


def tolerance_for(key: str, table: dict[str, float] | None = None) -> float:
    """The tolerance of `key`: exact entry, else the longest matching "prefix/" entry, else the default."""
    t = TOLERANCES if table is None else table
    if key in t:
        return t[key]
    best = ""
    for k in t:
        if k.endswith("/") and key.startswith(k) and len(k) > len(best):
            best = k
    return t[best]


@dataclass(frozen=True)
class KeyResult:
    key: str
    kind: str  # 'float', 'exact' (integer/bool) or 'rotmat' (rotation vectors compared as matrices)
    max_abs: float
    rel: float  # max_abs / max|ref| (0 when both are empty)
    tol: float
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class Report:
    results: tuple[KeyResult, ...]
    missing: tuple[str, ...]  # required golden keys absent from the output

    @property
    def passed(self) -> bool:
        """Every compared key within tolerance, none missing, and at least one data key compared (one outside
        meta/: comparing settings alone, or nothing, proves nothing and is a failure)."""
        return self.data_keys > 0 and not self.missing and all(r.ok for r in self.results)

    @property
    def data_keys(self) -> int:
        return sum(not r.key.startswith("meta/") for r in self.results)

    @property
    def worst(self) -> KeyResult | None:
        """The failing key with the largest rel/tol, else the key closest to its tolerance."""
        if not self.results:
            return None
        return max(self.results, key=lambda r: (not r.ok, r.rel / r.tol if r.tol > 0 else float(r.rel > 0)))


def rotvec_to_rotmat(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) by Rodrigues' formula, in float64."""
    r = np.asarray(rotvec, np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)  # (..., 1)
    k = r / np.maximum(theta, 1e-12)
    K = np.zeros(r.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def compare_arrays(key: str, out: np.ndarray, ref: np.ndarray, tol: float | None = None) -> KeyResult:
    """Compare one key. Shapes must match; integer/bool keys must be identical; float keys within tol."""
    tol = tolerance_for(key) if tol is None else tol
    a, b = np.asarray(out), np.asarray(ref)
    exact = b.dtype.kind in "biu"
    kind = "exact" if exact else ("rotmat" if key in ROTVEC_KEYS else "float")
    if a.shape != b.shape:
        return KeyResult(key, kind, float("inf"), float("inf"), tol, False, f"shape {a.shape} != golden {b.shape}")
    if exact != (a.dtype.kind in "biu"):
        return KeyResult(key, kind, float("inf"), float("inf"), tol, False, f"dtype {a.dtype} != golden {b.dtype}")
    note = "" if a.dtype == b.dtype else f"dtype {a.dtype} (golden {b.dtype})"
    if b.size == 0:
        return KeyResult(key, kind, 0.0, 0.0, tol, True, note)
    if exact:
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        m = float(diff.max())
        return KeyResult(key, kind, m, m, 0.0, m == 0, note)
    if kind == "rotmat":
        raw = float(np.abs(a.astype(np.float64) - b).max())
        a, b = rotvec_to_rotmat(a), rotvec_to_rotmat(b)
        note = (note + " " if note else "") + f"raw rotvec max abs {raw:.3g}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if np.isnan(a64).any() or np.isnan(b64).any():
        same = np.array_equal(np.isnan(a64), np.isnan(b64))
        if not same:
            return KeyResult(key, kind, float("nan"), float("nan"), tol, False, "NaN pattern differs")
        a64, b64 = np.nan_to_num(a64), np.nan_to_num(b64)
    m = float(np.abs(a64 - b64).max())
    scale = float(np.abs(b64).max())
    rel = m / scale if scale > 0 else (0.0 if m == 0 else float("inf"))
    return KeyResult(key, kind, m, rel, tol, rel <= tol, note)


def _load(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise Human3RError(msg(f"npz {p}", "file not found"))
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise Human3RError(msg(f"npz {p}", "cannot be read", repr(exc), "an .npz written by numpy")) from exc


def compare_dicts(out: dict[str, np.ndarray], golden: dict[str, np.ndarray],
                  required_prefixes: tuple[str, ...] = REQUIRED_PREFIXES) -> Report:
    """Compare keys present in both; report required golden keys missing from `out`."""
    missing = tuple(sorted(k for k in golden if k.startswith(required_prefixes) and k not in out))
    results = tuple(compare_arrays(k, out[k], golden[k]) for k in sorted(golden) if k in out)
    return Report(results, missing)


def compare_files(out_path: str | Path, golden_path: str | Path) -> Report:
    return compare_dicts(_load(out_path), _load(golden_path))


def format_report(report: Report) -> list[str]:
    """Table lines (one per key) and a final `PASSED`/`FAILED` line naming the worst key."""
    lines = [f"{'key':42s} {'kind':6s} {'max abs':>10s} {'rel':>10s} {'tol':>8s}  status"]
    for r in report.results:
        status = "ok" if r.ok else "FAIL"
        tol = "exact" if r.kind == "exact" else f"{r.tol:.0e}"
        lines.append(f"{r.key:42s} {r.kind:6s} {r.max_abs:10.3e} {r.rel:10.3e} {tol:>8s}  {status}"
                     + (f"  ({r.note})" if r.note else ""))
    for k in report.missing:
        lines.append(f"{k:42s} missing from the output (required)")
    worst = report.worst
    if report.passed:
        tail = f" (worst {worst.key}: rel {worst.rel:.3e} vs tol {worst.tol:.0e})" if worst else ""
        lines.append(f"PASSED {len(report.results)} keys{tail}")
    else:
        n_fail = sum(not r.ok for r in report.results)
        parts = []
        if n_fail and worst is not None:
            parts.append(f"{n_fail} key(s) out of tolerance, worst {worst.key}: rel {worst.rel:.3e} vs tol "
                         f"{worst.tol:.0e}" + (f" ({worst.note})" if worst.note else ""))
        if not report.data_keys:
            parts.append(f"no data key compared ({len(report.results)} meta/ keys only): the files share no "
                         "step/, demo/, smplx/ or inter/ key (is the golden a golden.npz?)")
        if report.missing:
            parts.append(f"{len(report.missing)} required key(s) missing: {', '.join(report.missing[:8])}"
                         + (" ..." if len(report.missing) > 8 else ""))
        lines.append("FAILED " + "; ".join(parts))
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output .npz (from `human3r-edge replay`)")
    parser.add_argument("golden", help="golden .npz (golden.npz or golden_nottt3r.npz)")


def main(args: argparse.Namespace) -> int:
    try:
        report = compare_files(args.out, args.golden)
    except Human3RError as exc:
        print(f"FAILED {exc}")
        return 1
    for line in format_report(report):
        print(line)
    return 0 if report.passed else 1
