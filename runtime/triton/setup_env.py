"""Install what Triton serving needs, idempotently (what `make setup` runs): the bundled server and the model's own
Python environment, under one folder (default `<checkout>/.triton-env`, or $HUMAN3R_TRITON_HOME).

    python -m human3r_edge.runtime.triton.setup_env [--home DIR] [--force]

Layout:
    server/      `pip install --target --no-deps nvidia-pytriton==0.7.0`: the `tritonserver` 2.51 binary, its
                 libraries (nvidia_pytriton.libs) and the Python backend, with the CPython 3.11 stub copied from
                 python_backend_stubs/3.11/ into backends/python/
    model-site/  the packages the Python-backend model imports (numpy < 2, onnxruntime, pillow): the stub runs
                 the system libpython3.11 and, with numpy 2, Triton's output tensors arrive empty
    stamp.json   what was installed (checked on every call: nothing is downloaded when it matches)

Why not a pip extra: nvidia-pytriton requires numpy < 2 and the project's environment has numpy 2, so the wheel is
installed with --no-deps into its own folder. The client side (tritonclient[http]) is the `[serve]` extra.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PYTRITON_PIN = "nvidia-pytriton==0.7.0"
STUB_PYTHON = "3.11"  # the stub links libpython3.11.so.1.0 (Debian package libpython3.11)
MODEL_PACKAGES = ["numpy>=1.24,<2", "pillow>=10"]


def default_home() -> Path:
    env = os.environ.get("HUMAN3R_TRITON_HOME")
    if env:
        return Path(env)
    import human3r_edge

    return Path(human3r_edge.__file__).resolve().parent.parent / ".triton-env"


def onnxruntime_pin() -> str:
    """The same onnxruntime version as the client's environment (same CPU kernels, so the served results equal a
    local run's), as the CPU package."""
    from importlib import metadata

    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return f"onnxruntime=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "onnxruntime>=1.18"


def wanted(home: Path) -> dict:
    return {"pytriton": PYTRITON_PIN, "stub_python": STUB_PYTHON, "model": MODEL_PACKAGES + [onnxruntime_pin()],
            "home": str(home.resolve())}


def is_installed(home: Path) -> bool:
    stamp = home / "stamp.json"
    try:
        return json.loads(stamp.read_text()) == wanted(home) and (server_root(home) / "bin" / "tritonserver").is_file()
    except (OSError, ValueError):
        return False


def server_root(home: Path) -> Path:
    return home / "server" / "pytriton" / "tritonserver"


def _pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts", *args]
    print("setup_env |", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def install(home: Path, force: bool = False) -> Path:
    if not force and is_installed(home):
        return home
    tic = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("server", "model-site"):
        shutil.rmtree(home / sub, ignore_errors=True)
    _pip(["--no-deps", "--target", str(home / "server"), PYTRITON_PIN])
    root = server_root(home)
    stub = root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
    shutil.copy2(stub, root / "backends" / "python" / "triton_python_backend_stub")
    for exe in (root / "bin" / "tritonserver", root / "backends" / "python" / "triton_python_backend_stub"):
        exe.chmod(0o755)
    _pip(["--target", str(home / "model-site"), *wanted(home)["model"]])
    (home / "stamp.json").write_text(json.dumps(wanted(home), indent=1))
    print(f"setup_env | Triton serving installed in {home} ({time.monotonic() - tic:.0f} s)", file=sys.stderr)
    return home


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=None, help="install folder (default: <checkout>/.triton-env)")
    p.add_argument("--force", action="store_true", help="reinstall even when the stamp matches")
    a = p.parse_args(argv)
    home = a.home or default_home()
    if is_installed(home) and not a.force:
        print(f"setup_env | up to date: {home}", file=sys.stderr)
        return 0
    install(home, a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
