"""Shared test fixtures: where the reference goldens are, and the skip/fail policy for them."""
from __future__ import annotations

from pathlib import Path

import pytest

from support.ci import require
from support.goldens import REPO, golden, golden_dirs, goldens_root, references  # noqa: F401  (re-exported)


def _missing(what: str) -> None:
    require(False, f"{what} not found under {goldens_root()} (set HUMAN3R_GOLDENS)",
            "CI=true: goldens are required, not optional")


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
    """`golden_dir` parametrises a test over every golden folder (so a new golden is tested automatically).

    A test that also takes `reference` runs once per reference npz that the golden actually holds
    (`golden.npz` always, `golden_nottt3r.npz` where present): an optional reference file is not a missing golden.
    """
    if "golden_dir" not in metafunc.fixturenames:
        return
    dirs = golden_dirs()
    if "reference" in metafunc.fixturenames:
        pairs = [(d, r) for d in dirs for r in references(d)]
        if not pairs:
            metafunc.parametrize("golden_dir,reference", [pytest.param(None, "golden.npz", id="no-goldens")])
        else:
            metafunc.parametrize("golden_dir,reference", pairs, ids=[f"{d.name}-{r}" for d, r in pairs])
    elif not dirs:
        metafunc.parametrize("golden_dir", [pytest.param(None, id="no-goldens")])
    else:
        metafunc.parametrize("golden_dir", dirs, ids=[d.name for d in dirs])


@pytest.fixture
def gold(golden_dir):
    """The facts of the parametrised golden (`support.goldens.Golden`); fails under CI=true without goldens."""
    if golden_dir is None:
        _missing("golden folders")
    return golden(golden_dir)


@pytest.fixture
def require_golden(request):
    """Use with golden_dir: fails under CI=true, skips otherwise, when no goldens exist."""
    if request.getfixturevalue("golden_dir") is None:
        _missing("golden folders")
