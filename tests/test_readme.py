"""Every command the README shows exists and parses as written; its Python example runs on a real export."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.cli import COMMANDS, build_parser

from support.goldens import REPO
from support.exports import random_tiny_export

README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _shell_commands() -> list[list[str]]:
    cmds = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                cmds.append(shlex.split(line))
    return cmds


def test_readme_shows_the_two_commands_and_make_has_them():
    cmds = [c for c in _shell_commands() if c[0] == "make"]
    assert ["make", "demo"] in cmds and ["make", "test"] in cmds
    targets = subprocess.run(["make", "-pRrq", "-C", str(REPO)], capture_output=True, text=True).stdout
    for t in ("demo", "test", "setup", "typecheck"):
        assert re.search(rf"^{t}:", targets, flags=re.M), t
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_cli_command_in_the_readme_parses():
    cli_cmds = [c for c in _shell_commands() if c[0] == "human3r-edge"]
    assert len(cli_cmds) >= 4
    for argv in cli_cmds:
        name = argv[1]
        assert name in COMMANDS, argv
        build_parser(only=name).parse_args(argv[1:])  # SystemExit(2) on a flag the command does not have
    table = re.findall(r"^\| `human3r-edge ([a-z-]+)", README, flags=re.M)
    assert set(table) <= set(COMMANDS) and len(table) >= 8


def test_python_example_runs(tmp_path_factory, tmp_path, synthetic_smplx):
    (example,) = _blocks("python")
    export_dir = random_tiny_export(tmp_path_factory)
    import cv2

    video = tmp_path / "video.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(3):
        vw.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    vw.release()
    code = (example.replace('"onnx/"', repr(str(export_dir)))
            .replace('"SMPLX_NEUTRAL.npz"', repr(str(synthetic_smplx)))
            .replace('"video.mp4"', repr(str(video))))
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) >= 3 * 4  # 3 frames, each printing a 4x4 c2w (4 lines) and the people
    assert "(10475, 3)" in out.stdout or "[]" in out.stdout


@pytest.mark.parametrize("path", re.findall(r"\]\(((?:docs|benchmarks)/[^)]+)\)", README))
def test_linked_docs_exist(path):
    assert (REPO / path).is_file(), path
