"""Shared test fixtures: where the reference goldens are, and the skip/fail policy for them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def _missing(what: str) -> None:
    text = f"{what} not found under {goldens_root()} (set HUMAN3R_GOLDENS)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(text + " | CI=true: goldens are required, not optional")
    pytest.skip(text)


@pytest.fixture(scope="session")
def goldens() -> Path:
    root = goldens_root()
    if not root.is_dir():
        _missing("goldens folder")
    return root


@pytest.fixture(scope="session")
def golden_list(goldens: Path) -> list[Path]:
    dirs = golden_dirs()
    if not dirs:
        _missing("golden folders")
    return dirs


@pytest.fixture(scope="session")
def synthetic_smplx(goldens: Path) -> Path:
    p = goldens / "smplx_synthetic" / "SMPLX_NEUTRAL.npz"
    if not p.is_file():
        _missing("synthetic SMPL-X model")
    return p


def pytest_generate_tests(metafunc):
    """`golden_dir` parametrises a test over every golden folder (so a new golden is tested automatically)."""
    if "golden_dir" in metafunc.fixturenames:
        dirs = golden_dirs()
        if not dirs:
            metafunc.parametrize("golden_dir", [pytest.param(None, id="no-goldens")])
        else:
            metafunc.parametrize("golden_dir", dirs, ids=[d.name for d in dirs])


@pytest.fixture
def require_golden(request):
    """Use with golden_dir: fails under CI=true, skips otherwise, when no goldens exist."""
    if request.getfixturevalue("golden_dir") is None:
        _missing("golden folders")
