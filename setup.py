"""Package mapping: the top-level folders export/, runtime/, kernels/, benchmarks/ become subpackages of the
single import package `human3r_edge` (so nothing installs a top-level module called `runtime` or `kernels`)."""
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
    packages += [f"{pkg}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
