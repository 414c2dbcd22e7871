"""Headless Chromium for the viewer tests: Debian's /usr/bin/chromium driven by playwright (no browser download).

`make setup` installs both (chromium through .ci/apt-install.sh as root, playwright through the dev extra). Where
one is missing the test skips with the reason, except on CI (CI=true), where it fails.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import numpy as np

from support.ci import require

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # WebGL in software (SwiftShader): viser draws with three.js
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def need_browser() -> str:
    """The chromium executable, or skip (fail on CI) with the reason."""
    missing = []
    exe = chromium_path()
    if exe is None:
        missing.append("chromium (apt-get install chromium; `make setup` does it as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        require(False, "headless browser test needs " + " and ".join(missing))
    assert exe is not None
    return exe


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 800, nice: int = 0) -> Iterator:
    """A playwright page in a fresh headless Chromium profile; console messages collected in page.logs.
    `nice` > 0 runs the browser at that lower CPU priority (benchmarks: it renders in software on our cores)."""
    from playwright.sync_api import sync_playwright

    exe = need_browser()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        if nice > 0:
            wrapper = os.path.join(profile, "chromium-nice")
            with open(wrapper, "w") as f:
                f.write(f'#!/bin/sh\nexec nice -n {int(nice)} {exe} "$@"\n')
            os.chmod(wrapper, 0o755)
            exe = wrapper
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=exe, args=CHROMIUM_FLAGS, headless=True,
                                                    viewport={"width": width, "height": height})
        try:
            page = ctx.new_page()
            page.logs = []
            page.on("console", lambda m: page.logs.append(m.text))
            yield page
        finally:
            ctx.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def not_blank(png: bytes, box: tuple[int, int, int, int]) -> float:
    """Fraction of pixels in box (x0, y0, x1, y1) of a PNG screenshot that differ from its most common colour."""
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[box[1]:box[3], box[0]:box[2]]
    flat = img.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    bg = colours[np.argmax(counts)]
    return float(np.mean(np.abs(flat.astype(int) - bg).sum(1) > 10))
