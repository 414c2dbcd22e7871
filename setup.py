"""Package mapping: the top-level folders export/, runtime/, kernels/, benchmarks/ become subpackages of the
single import package `human3r_edge` (so nothing installs a top-level module called `runtime` or `kernels`).

The checkout shows the same mapping to Python and to people: `human3r_edge/{export,runtime,kernels,benchmarks}` are
committed relative symlinks to those folders, so `human3r_edge.runtime.session` is `human3r_edge/runtime/session.py`
is `runtime/session.py`, from any current directory (the repository root included, where the checkout's
`human3r_edge/` shadows an installed wheel and must therefore import completely). `package_dir` below makes wheels
copy the real folders rather than rely on symlinks.
"""
from setuptools import find_packages, setup

ROOTS = {
    "human3r_edge": "human3r_edge",
    "human3r_edge.export": "export",
    "human3r_edge.runtime": "runtime",
    "human3r_edge.kernels": "kernels",
    "human3r_edge.benchmarks": "benchmarks",
}
packages = []
for pkg, folder in ROOTS.items():
    packages.append(pkg)
    if pkg != "human3r_edge":  # its subfolders are the symlinks to the other roots, listed once through ROOTS
        packages += [f"{pkg}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
