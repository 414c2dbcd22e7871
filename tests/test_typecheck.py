"""Repaired tensorrt-stubs: valid, carrying the TensorRT 10 API; mypy accepts our TensorRT code and rejects TRT 8 calls."""
from __future__ import annotations

import ast
import os
import textwrap
from pathlib import Path

import pytest

from human3r_edge.export.trt_stubs import api_problems, find_installed_stubs, repair_source, write_repaired
from human3r_edge.errors import Human3RError
from support.ci import require

REPO = Path(__file__).resolve().parents[1]
OUR_TRT_MODULES = ["human3r_edge.runtime.backends.trt", "human3r_edge.runtime.backends.ort",
                   "human3r_edge.runtime.cuda_util", "human3r_edge.runtime.commands.check", "human3r_edge.export.trt_build",
                   "human3r_edge.export.trt_ops", "human3r_edge.export.trt_stubs"]


def _installed_or_skip() -> Path:
    try:
        return find_installed_stubs()
    except Human3RError as exc:
        require(False, str(exc))
        raise


@pytest.fixture(scope="module")
def typing_dir(tmp_path_factory) -> Path:
    src = _installed_or_skip()
    out = tmp_path_factory.mktemp("typing") / "stubs"
    write_repaired(out, src)
    return out


def test_repair_rules_on_snippets():
    text = textwrap.dedent('''\
        from __future__ import annotations
        import tensorrt_libs as tensorrt_libs
        __all__ = ['A', 'tensorrt_libs']
        class A:
            def f(self, in: list[int], out: list[int]) -> bool:
                """def g(in: int) stays untouched in a docstring"""
            def g(self, a: int = 1, b: int, *, c: str) -> ...:
                ...
            def h(self, flag: ..., s: str = 'a,(b') -> None:
                ...
        bool: A
        ''')
    out, fixes = repair_source(text, "snippet")
    tree = ast.parse(out)
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert [a.arg for a in funcs["f"].args.args] == ["self", "in_", "out"]
    assert len(funcs["g"].args.defaults) == 2  # b got a default; keyword-only c untouched
    assert [a.arg for a in funcs["g"].args.kwonlyargs] == ["c"]
    assert "def g(in: int) stays untouched" in out  # docstrings are never rewritten
    assert "s: str = 'a,(b'" in out
    assert "import tensorrt_libs" not in out and "'tensorrt_libs'" not in out
    assert "-> builtins.bool" in out and "flag: typing.Any" in out and "-> typing.Any" in out
    assert len(fixes) >= 6


def test_unrepairable_source_is_reported():
    with pytest.raises(Human3RError, match="still does not parse"):
        repair_source("def f(self) -> int:\n  return (\n", "broken")


def test_repaired_stubs_carry_the_tensorrt_10_api(typing_dir):
    for f in sorted(typing_dir.rglob("*.pyi")):
        ast.parse(f.read_text())  # every file parses
    assert (typing_dir / "tensorrt" / "py.typed").is_file() and (typing_dir / "tensorrt_bindings" / "py.typed").is_file()
    text = (typing_dir / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    assert api_problems(text) == []
    assert "def execute_async_v3(self, stream_handle: int) -> builtins.bool" in text
    assert "def set_tensor_address(" in text and "def build_engine(" not in text
    assert "import tensorrt_libs" not in (typing_dir / "tensorrt" / "__init__.pyi").read_text()


def _mypy(typing_dir: Path, tmp: Path, *targets: str) -> tuple[int, str]:
    from mypy import api

    args = ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp / "mypy_cache"),
            "--follow-imports", "silent", "--no-error-summary"]
    for t in targets:  # modules (-m) or files, not both in one run
        args += [t] if t.endswith(".py") else ["-m", t]
    old = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(typing_dir)  # searched before the config's mypy_path
    try:
        out, err, code = api.run(args)
    finally:
        if old is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = old
    return code, out + err


def test_mypy_accepts_our_tensorrt_code_and_rejects_trt8_calls(typing_dir, tmp_path):
    planted = tmp_path / "planted_trt8.py"
    planted.write_text(textwrap.dedent('''\
        import tensorrt as trt

        def build(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> None:
            builder.build_engine(network, config)  # TensorRT 8 API, removed in 10

        def run(context: trt.IExecutionContext, bindings: list[int], stream: int) -> None:
            context.execute_async_v2(bindings, stream)  # TensorRT 8 API, removed in 10
        '''))
    good = tmp_path / "good_trt10.py"
    good.write_text(textwrap.dedent('''\
        import tensorrt as trt

        def run(context: trt.IExecutionContext, stream: int) -> bool:
            ok: bool = context.set_tensor_address("x", 0) and context.execute_async_v3(stream)
            return ok
        '''))
    code, out = _mypy(typing_dir, tmp_path, *OUR_TRT_MODULES)
    assert code == 0, out
    code, out = _mypy(typing_dir, tmp_path, str(good))
    assert code == 0, out
    code, out = _mypy(typing_dir, tmp_path, str(planted))
    assert code == 1
    assert '"Builder" has no attribute "build_engine"' in out
    assert '"IExecutionContext" has no attribute "execute_async_v2"' in out


@pytest.mark.slow
def test_mypy_passes_on_every_package(typing_dir, tmp_path):
    """`make typecheck`: runtime/, export/, kernels/ and benchmarks/ (the config's `packages`), read through the
    checkout's human3r_edge/ symlinks."""
    from mypy import api

    old = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(typing_dir)
    try:
        out, err, code = api.run(["--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
                                  str(tmp_path / "mypy_cache")])
    finally:
        if old is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = old
    assert code == 0, out + err
