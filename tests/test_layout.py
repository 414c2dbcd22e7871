"""The package layout: a wheel works from any directory, the checkout imports completely, and the import graph
(read from the source) has no cycles, a leaf `kernels/`, a torch-free `runtime/`, and only resolvable imports."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import imports

REPO = imports.REPO


def test_checkout_maps_every_folder_through_a_relative_symlink():
    for name in ("export", "runtime", "kernels", "benchmarks"):
        link = REPO / "human3r_edge" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", name
        assert (link / "__init__.py").is_file()


def test_no_import_cycles():
    found = imports.cycles(imports.project_graph(include_lazy=True))
    assert found == [], "import cycles (lazy imports included): " + "; ".join(" <-> ".join(c) for c in found)


def test_kernels_is_a_leaf_and_runtime_is_torch_free():
    bad = []
    for e in imports.edges():
        top = e.target.split(".")[0]
        if e.source.startswith("human3r_edge.kernels") and e.target.startswith(
                ("human3r_edge.runtime", "human3r_edge.export", "human3r_edge.benchmarks")):
            bad.append(f"{e.source}:{e.line} imports {e.target} (kernels/ is a leaf)")
        if e.source.startswith("human3r_edge.runtime") and (
                top in ("torch", "smplx", "torchvision") or e.target.startswith("human3r_edge.export")):
            bad.append(f"{e.source}:{e.line} imports {e.target} (runtime/ never imports torch or export/)")
    assert bad == [], "\n".join(bad)


def test_every_project_import_names_a_file():
    bad = [f"{e.source}:{e.line} imports {e.target}" for e in imports.edges()
           if (e.target == imports.PACKAGE or e.target.startswith(imports.PACKAGE + ".")) and not e.resolved]
    assert bad == [], "\n".join(bad)


def test_one_import_style():
    """Project modules import each other by absolute name (`from human3r_edge.runtime.x import y`), never relatively,
    so a reader or a tool finds the file by its name."""
    import ast

    bad = []
    for name, path in imports.modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert bad == [], "relative imports: " + ", ".join(bad[:20]) + (f" (+{len(bad) - 20})" if len(bad) > 20 else "")


@pytest.mark.slow
def test_wheel_works_from_any_directory_including_the_repository_root(tmp_path):
    """Build a wheel, install it (no deps) into a fresh folder, and run the CLI with only that folder and the
    dependencies on the path: from the repository root (where the checkout's human3r_edge/ comes first on sys.path
    and must import completely) and from elsewhere (the wheel alone)."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("human3r_edge-*.whl"))
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    pkg = target / "human3r_edge"
    for name in ("export", "runtime", "kernels", "benchmarks"):
        assert (pkg / name / "__init__.py").is_file() and not (pkg / name).is_symlink(), name
    assert any((pkg / "kernels").glob("*.cu")), "kernel sources ship as package data"
    # -S: no site processing, so the editable install's import hook is not there; the dependencies come from the
    # venv's site-packages, after the wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]])
    for cwd in (REPO, tmp_path):
        for args in (["--help"], ["bench", "--help"], ["run", "--help"]):
            proc = subprocess.run([sys.executable, "-S", "-m", "human3r_edge", *args], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0 and "usage" in proc.stdout, (cwd, args, proc.stdout[-2000:] + proc.stderr[-2000:])
        where = subprocess.run([sys.executable, "-S", "-c", "import human3r_edge.runtime.session as s; print(s.__file__)"],
                               cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        want = REPO if cwd == REPO else target
        assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(want), (cwd, where.stdout,
                                                                                         where.stderr[-2000:])


def test_cli_maps_our_errors_to_exit_codes_once(monkeypatch, capsys):
    """A command that lets a Human3RError or BackendUnavailable escape still ends in one line and exit 2 / 3."""
    import types

    from human3r_edge import cli
    from human3r_edge.errors import BackendUnavailable, Human3RError

    for exc, code in ((Human3RError("thing | broken: x. Expected y"), 2), (BackendUnavailable("gpu | missing"), 3)):
        def main(args, exc=exc):
            raise exc
        mod = types.SimpleNamespace(add_arguments=lambda p: None, main=main)
        monkeypatch.setitem(cli.COMMANDS, "boom", ("boom_module", "raises"))
        monkeypatch.setattr(cli, "_load", lambda name, mod=mod: mod)
        assert cli.main(["boom"]) == code
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"human3r-edge boom | {exc}"] and "Traceback" not in err


def test_every_runtime_module_imports_without_torch_or_gpu_stacks():
    """Walk every module of runtime/ (pkgutil) in a fresh interpreter: none imports torch, smplx, tensorrt, pycuda
    or onnxruntime when it is imported (they load lazily, when a backend or command needs them). Modules of the
    GStreamer element need PyGObject (`gi`, the system's, loaded by GStreamer's plugin loader): where it is
    absent they are reported, not failed."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import human3r_edge.runtime as rt\n"
        "done, optional, heavy = [], [], {}\n"
        "for m in pkgutil.walk_packages(rt.__path__, 'human3r_edge.runtime.'):\n"
        "    if '.gst.plugin' in m.name:\n"
        "        continue  # the file GStreamer's loader reads, not a module of the package\n"
        "    before = set(sys.modules)\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "        done.append(m.name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        if exc.name != 'gi':\n"
        "            raise\n"
        "        optional.append(m.name)\n"
        "    new = {k.split('.')[0] for k in set(sys.modules) - before}\n"
        "    bad = sorted(new & {'torch', 'smplx', 'tensorrt', 'pycuda', 'onnxruntime'})\n"
        "    if bad:\n"
        "        heavy[m.name] = bad\n"
        "print(json.dumps({'done': done, 'optional': optional, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["heavy"] == {}, r["heavy"]
    assert len(r["done"]) >= 40 and "human3r_edge.runtime.session" in r["done"], r
    assert all(".gst." in m for m in r["optional"]), r["optional"]
