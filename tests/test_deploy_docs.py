"""The deployment guides install a stack that runs (issue 13, bugs 5 and 6).

Every `pip install` line of docs/deploy-*.md is parsed. The TensorRT major a guide installs must equal the one
the installed onnxruntime-gpu's TensorRT provider links (the ELF NEEDED entries of
onnxruntime/capi/libonnxruntime_providers_tensorrt.so, read by runtime/doctor.elf_needed), its CUDA major the one
ORT's providers link, and no guide may install an NVIDIA placeholder wheel. pyproject.toml must install on a
Jetson (aarch64: no onnxruntime-gpu on the package index; numpy < 2 for JetPack's ORT wheel).
"""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from human3r_edge.runtime.commands import doctor

ROOT = Path(__file__).resolve().parent.parent
GUIDES = sorted((ROOT / "docs").glob("deploy-*.md"))
# 0.0.1 placeholders on the package index: CUDA 13 moved to unsuffixed names (nvidia-cublas, nvidia-cuda-runtime...)
PLACEHOLDERS = {"nvidia-cublas-cu13", "nvidia-cuda-runtime-cu13", "nvidia-cuda-nvrtc-cu13", "nvidia-curand-cu13",
                "nvidia-cufft-cu13"}
_OPTS_WITH_VALUE = {"--extra-index-url", "--index-url", "-i", "-c", "--constraint", "-r", "--requirement",
                    "--find-links", "-f"}


def pip_lines(text: str) -> list[str]:
    """Every `pip install ...` command in a markdown text (code blocks and inline code), comments stripped."""
    out = []
    for m in re.finditer(r"(?:^|`|\$ |&& )\s*((?:python3? -m )?pip3? install [^`\n]*)", text, re.M):
        line = m.group(1).split(" #")[0].strip()
        out.append(line)
    return out


def requirements(line: str) -> tuple[list[Requirement], list[str]]:
    """(requirements, local extras like '.[trt]' -> ['trt']) of one pip install command."""
    toks = shlex.split(line)
    toks = toks[toks.index("install") + 1:]
    reqs, extras = [], []
    skip = False
    for i, t in enumerate(toks):
        if skip:
            skip = False
            continue
        if t in _OPTS_WITH_VALUE:
            skip = True
            continue
        if t.startswith("-") and t != "-e":
            continue
        if t == "-e":
            continue
        if t.startswith(".") or t.startswith("/"):
            m = re.search(r"\[([^\]]+)\]", t)
            extras += [e.strip() for e in m.group(1).split(",")] if m else []
            continue
        reqs.append(Requirement(t))
    return reqs, extras


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _env(machine: str) -> dict:
    env = default_environment()
    env.update(platform_machine=machine, sys_platform="linux", platform_system="Linux")
    return env


def project_requirements(extras: list[str], machine: str) -> list[Requirement]:
    """What `pip install -e '.[extras]'` requires on a machine (markers evaluated)."""
    p = _project()
    reqs = [Requirement(r) for r in p["dependencies"]]
    for e in extras:
        reqs += [Requirement(r) for r in p["optional-dependencies"].get(e, [])]
    env = _env(machine)
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def resolved_major(spec: SpecifierSet) -> int:
    """The major version pip picks for a TensorRT requirement: the newest major the specifier admits."""
    majors = [m for m in range(8, 20) if any(spec.contains(f"{m}.{n}.0") for n in (0, 3, 13, 16, 99))]
    assert majors, f"no TensorRT major admitted by {spec}"
    return max(majors)


def guide_machine(path: Path) -> str:
    return "aarch64" if "jetson" in path.name else "x86_64"


@pytest.fixture(scope="module")
def ort_links() -> dict[str, list[str]]:
    links = doctor.ort_provider_links()
    if "tensorrt" not in links:
        pytest.skip("onnxruntime-gpu with its TensorRT provider library is not installed here")
    return links


def test_guides_exist_and_have_pip_lines():
    assert {p.name for p in GUIDES} >= {"deploy-desktop.md", "deploy-jetson.md"}
    for g in GUIDES:
        assert pip_lines(g.read_text()), g.name


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_guide_tensorrt_major_matches_what_onnxruntime_links(guide, ort_links):
    want_trt = doctor.linked_major(ort_links["tensorrt"], "libnvinfer")
    want_cuda = doctor.linked_major(ort_links["tensorrt"], "libcudart")
    assert want_trt is not None and want_cuda is not None
    found = []
    for line in pip_lines(guide.read_text()):
        reqs, extras = requirements(line)
        for r in reqs + project_requirements(extras, guide_machine(guide)):
            name = r.name.lower().replace("_", "-")
            assert name not in PLACEHOLDERS, f"{guide.name}: {name} is a 0.0.1 placeholder wheel ({line})"
            if name == "tensorrt" or name.startswith("tensorrt-cu"):
                found.append((line, name, r.specifier))
                got = resolved_major(r.specifier)
                what = f"TensorRT {got}" if got < 19 else "the newest TensorRT (no upper bound: 11 today)"
                assert got == want_trt, (f"{guide.name}: `{line}` installs {what}, but onnxruntime-gpu's "
                                         f"TensorRT EP links libnvinfer.so.{want_trt}")
                m = re.match(r"tensorrt-cu(\d+)", name)
                assert m is None or int(m.group(1)) == want_cuda, (f"{guide.name}: {name} is for CUDA {m.group(1)}"
                                                                   f", ORT links libcudart.so.{want_cuda}")
                assert name != "tensorrt", (f"{guide.name}: the bare `tensorrt` wheel picks its CUDA build itself; "
                                            f"name tensorrt-cu{want_cuda}")
    if guide_machine(guide) == "aarch64":
        assert not found, f"{guide.name}: JetPack brings TensorRT; no pip TensorRT on a Jetson: {found}"
    else:
        assert found, f"{guide.name} installs no TensorRT"


def test_desktop_guide_pins_the_onnxruntime_it_was_checked_against(ort_links):
    import onnxruntime

    text = (ROOT / "docs" / "deploy-desktop.md").read_text()
    have = onnxruntime.__version__
    major, minor = (int(v) for v in have.split(".")[:2])
    pins = [r.specifier for line in pip_lines(text) for r in requirements(line)[0] if r.name == "onnxruntime-gpu"]
    assert pins, "the desktop guide installs no onnxruntime-gpu"
    for spec in pins:
        assert spec.contains(have) and not spec.contains(f"{major}.{minor + 1}.0"), (
            f"pin onnxruntime-gpu to {major}.{minor}.* (the ELF pairing was checked against {have}): {spec}")


def test_pyproject_installs_on_a_jetson():
    """aarch64: onnxruntime-gpu is no hard dependency (no wheel on the package index; JetPack's wheel is
    installed by the guide), numpy is kept < 2 (JetPack's ORT wheel breaks under numpy 2, ORT#27562)."""
    jetson = {r.name: r for r in project_requirements([], "aarch64")}
    assert "onnxruntime-gpu" not in jetson
    assert not jetson["numpy"].specifier.contains("2.0.0")
    desktop = {r.name: r for r in project_requirements([], "x86_64")}
    assert "onnxruntime-gpu" in desktop and desktop["numpy"].specifier.contains("2.0.0")


def test_jetson_guide_installs_the_tools_it_uses():
    text = (ROOT / "docs" / "deploy-jetson.md").read_text()
    names = {r.name.lower() for line in pip_lines(text) for r in requirements(line)[0]}
    assert "polygraphy" in names, "check needs polygraphy"
    assert any("numpy<2" in line.replace(" ", "").replace("'", "") for line in pip_lines(text))


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_guides_start_with_doctor_and_need_no_shared_goldens(guide):
    text = guide.read_text()
    first_cmd = re.search(r"human3r-edge (\w[\w-]*)", text)
    assert first_cmd is not None and first_cmd.group(1) == "doctor", f"{guide.name} must start with doctor"
    assert "../shared/goldens" not in text.split("## 5.")[0], "a user's clone has no ../shared/goldens"
