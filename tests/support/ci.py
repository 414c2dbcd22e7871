"""The one rule for a missing test prerequisite: skip with the reason on a developer's machine, fail under CI=true
(where `make setup` installs everything, so a missing piece is a broken setup, not an optional feature)."""
from __future__ import annotations

import os

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(ok: bool, why: str, ci_why: str = "CI=true: `make setup` installs it") -> None:
    """Nothing when `ok`; else fail under CI (with `ci_why`), skip elsewhere, both with `why`."""
    if ok:
        return
    if on_ci():
        pytest.fail(f"{why} | {ci_why}")
    pytest.skip(why)
