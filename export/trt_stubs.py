"""Write a mypy-valid copy of the published `tensorrt-stubs` (10.13) into `.typing/` (run by `make setup`).

The published stubs are generated from the pybind module and are not valid Python as shipped:
* parameters named after keywords (`in`), which is a syntax error;
* parameters without a default after parameters with one (pybind allows it, Python does not);
* `...` used as a type (`flag: ...`, `-> ...`);
* a module-level `bool: DataType` (trt.bool) that shadows the builtin in every `-> bool` of the module,
  so mypy would see no types at all for those (they are rewritten to `builtins.bool`);
* `import tensorrt_libs`, a runtime-only package with no stubs;
* no `py.typed` marker.

The project's own package needs nothing here: the checkout's `human3r_edge/` holds committed symlinks to
export/, runtime/, kernels/ and benchmarks/, which mypy reads from the repository root.

The repair works on the token stream of every `def` signature (so docstrings and string defaults are never
touched), then re-parses the result with `ast` and checks that the TensorRT 10 API the project relies on is
present and the removed TensorRT 8 API is absent. Usage:

    python -m human3r_edge.export.trt_stubs --out .typing
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import keyword
import re
import shutil
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from human3r_edge.errors import Human3RError, msg

STUB_DIST = "tensorrt-stubs"
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
# (class, method, must_exist): the TensorRT 10 API our code calls, and TensorRT 8 API that must stay absent
API_EXPECTATIONS: tuple[tuple[str, str, bool], ...] = (
    ("IExecutionContext", "execute_async_v3", True),
    ("IExecutionContext", "set_tensor_address", True),
    ("IExecutionContext", "set_input_shape", True),
    ("ICudaEngine", "num_io_tensors", True),
    ("ICudaEngine", "get_tensor_name", True),
    ("Builder", "build_serialized_network", True),
    ("IProgressMonitor", "step_complete", True),
    ("Builder", "build_engine", False),
    ("IExecutionContext", "execute_async_v2", False),
    ("ICudaEngine", "get_binding_index", False),
)


@dataclass
class RepairReport:
    """What one file needed."""

    path: str
    fixes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ token helpers
def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _signature_spans(text: str) -> list[tuple[int, int, list[tokenize.TokenInfo]]]:
    """(start, end, tokens) of the text between the parentheses of every `def name(...)`.

    `tokenize` is lexical only, so it works on the broken source; docstrings are single STRING tokens.
    """
    offs = _line_offsets(text)

    def at(pos: tuple[int, int]) -> int:
        return offs[pos[0] - 1] + pos[1]

    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    spans = []
    i = 0
    while i < len(toks) - 2:
        t = toks[i]
        if t.type == tokenize.NAME and t.string == "def" and toks[i + 1].type == tokenize.NAME \
                and toks[i + 2].string == "(":
            depth = 0
            j = i + 2
            inner: list[tokenize.TokenInfo] = []
            while j < len(toks):
                s = toks[j].string
                if toks[j].type == tokenize.OP and s in "([{":
                    depth += 1
                elif toks[j].type == tokenize.OP and s in ")]}":
                    depth -= 1
                    if depth == 0:
                        break
                if j > i + 2:
                    inner.append(toks[j])
                j += 1
            spans.append((at(toks[i + 2].end), at(toks[j].start), inner))
            i = j
        i += 1
    return spans


def _split_params(text: str, start: int, toks: list[tokenize.TokenInfo], offs: list[int]) -> list[str]:
    """Split a parameter list at its top-level commas (brackets and strings respected)."""
    cuts = []
    depth = 0
    for t in toks:
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif t.type == tokenize.OP and t.string == "," and depth == 0:
            cuts.append(offs[t.start[0] - 1] + t.start[1] - start)
    parts = []
    prev = 0
    for c in cuts:
        parts.append(text[prev:c])
        prev = c + 1
    parts.append(text[prev:])
    return [p.strip() for p in parts if p.strip()]


_PARAM = re.compile(r"^(?P<stars>\*{0,2})(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>.*)$", re.S)


def _top_level_index(s: str, ch: str) -> int:
    """Index of the first `ch` in `s` outside brackets and quotes, or -1."""
    depth = 0
    quote = ""
    for k, c in enumerate(s):
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ch and depth == 0:
            return k
    return -1


def _repair_params(params: list[str], where: str, fixes: list[str]) -> list[str]:
    out = []
    seen_default = False
    keyword_only = False
    for p in params:
        if p in ("*", "/"):
            keyword_only = keyword_only or p == "*"
            out.append(p)
            continue
        m = _PARAM.match(p)
        if m is None:
            out.append(p)
            continue
        stars, name, rest = m.group("stars"), m.group("name"), m.group("rest")
        if stars:
            keyword_only = True
            out.append(p)
            continue
        if keyword.iskeyword(name):
            fixes.append(f"{where}: parameter {name!r} renamed {name + '_'!r}")
            name = name + "_"
        eq = _top_level_index(rest, "=")
        annotation, default = (rest[:eq], rest[eq:]) if eq >= 0 else (rest, "")
        if re.fullmatch(r"\s*:\s*\.\.\.\s*", annotation):
            fixes.append(f"{where}: parameter {name!r} annotated '...' -> typing.Any")
            annotation = ": typing.Any"
        if default:
            seen_default = True
        elif seen_default and not keyword_only:
            fixes.append(f"{where}: non-default parameter {name!r} after a default given '= ...'")
            default = " = ..."
        ann = annotation.strip()
        if default:
            value = default.strip()[1:].strip()
            default = f" = {value}" if ann else f"={value}"
        out.append(f"{name}{ann}{default}")
    return out


def repair_source(text: str, label: str = "<stub>") -> tuple[str, list[str]]:
    """Return (repaired text, list of fixes). Raises Human3RError if the result still does not parse."""
    fixes: list[str] = []
    try:
        spans = _signature_spans(text)
    except (tokenize.TokenError, IndentationError) as exc:
        raise Human3RError(msg(f"stub repair of {label}", "result still does not parse", repr(exc), "valid Python",
                               "a new tensorrt-stubs release needs another repair rule in export/trt_stubs.py")) from exc
    offs = _line_offsets(text)
    pieces = []
    prev = 0
    for start, end, toks in spans:
        inner = text[start:end]
        line = text.count("\n", 0, start) + 1
        params = _split_params(inner, start, toks, offs)
        before = len(fixes)
        repaired = _repair_params(params, f"{label}:{line}", fixes)
        pieces.append(text[prev:start])
        pieces.append(", ".join(repaired) if len(fixes) > before else inner)
        prev = end
    pieces.append(text[prev:])
    out = "".join(pieces)
    out = _unshadow_builtins(out, label, fixes)
    n_ret = len(re.findall(r"\)\s*->\s*\.\.\.\s*:", out))
    if n_ret:
        out = re.sub(r"\)\s*->\s*\.\.\.\s*:", ") -> typing.Any:", out)
        fixes.append(f"{label}: {n_ret} return annotation(s) '...' -> typing.Any")
    if re.search(r"^import tensorrt_libs\b.*$", out, flags=re.M):
        out = re.sub(r"^import tensorrt_libs\b.*\n?", "", out, flags=re.M)
        out = re.sub(r"'tensorrt_libs',\s*|,\s*'tensorrt_libs'(?=\s*\])", "", out)
        fixes.append(f"{label}: removed the runtime-only `import tensorrt_libs`")
    if "typing.Any" in out and not re.search(r"^import typing\b", out, flags=re.M):
        out = out.replace("from __future__ import annotations\n", "from __future__ import annotations\nimport typing\n", 1) \
            if "from __future__ import annotations\n" in out else "import typing\n" + out
        fixes.append(f"{label}: added `import typing`")
    try:
        ast.parse(out, filename=label)
    except SyntaxError as exc:
        raise Human3RError(msg(f"stub repair of {label}", "result still does not parse",
                               f"line {exc.lineno}: {exc.msg}", "valid Python",
                               "a new tensorrt-stubs release needs another repair rule in export/trt_stubs.py")) from exc
    return out, fixes


def _unshadow_builtins(text: str, label: str, fixes: list[str]) -> str:
    """Rewrite uses of builtin names that a module-level variable of the same name shadows (e.g. `bool`)."""
    shadowed = {m.group(1) for m in re.finditer(r"^(bool|int|float|str|bytes|type|object)\s*:", text, flags=re.M)}
    if not shadowed:
        return text
    offs = _line_offsets(text)
    edits = []
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        if t.type == tokenize.NAME and t.string in shadowed and t.start[1] > 0:
            edits.append((offs[t.start[0] - 1] + t.start[1], offs[t.end[0] - 1] + t.end[1], t.string))
    if not edits:
        return text
    pieces = []
    prev = 0
    for a, b, name in edits:
        prev_char = text[a - 1] if a > 0 else ""
        pieces.append(text[prev:a])
        pieces.append(name if prev_char == "." else f"builtins.{name}")
        prev = b
    pieces.append(text[prev:])
    out = "".join(pieces)
    if not re.search(r"^import builtins\b", out, flags=re.M):
        out = out.replace("from __future__ import annotations\n", "from __future__ import annotations\nimport builtins\n", 1) \
            if "from __future__ import annotations\n" in out else "import builtins\n" + out
    fixes.append(f"{label}: {len(edits)} use(s) of shadowed builtin(s) {sorted(shadowed)} -> builtins.*")
    return out


# ------------------------------------------------------------------------------------------ verification
def api_problems(bindings_pyi: str) -> list[str]:
    """Differences between the stub text and API_EXPECTATIONS (empty when the TRT 10 API is as expected)."""
    tree = ast.parse(bindings_pyi)
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for b in node.body:
                if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(b.name)
                elif isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name):
                    names.add(b.target.id)
            members[node.name] = names
    problems = []
    for cls, meth, must in API_EXPECTATIONS:
        has = meth in members.get(cls, set())
        if has != must:
            problems.append(f"{cls}.{meth} {'missing' if must else 'present (TensorRT 8 API)'}")
    return problems


# ------------------------------------------------------------------------------------------ files
def find_installed_stubs() -> Path:
    """site-packages folder that holds the installed `tensorrt-stubs` packages."""
    from importlib import metadata

    try:
        dist = metadata.distribution(STUB_DIST)
    except metadata.PackageNotFoundError as exc:
        raise Human3RError(msg("tensorrt-stubs", "not installed", None, "tensorrt-stubs==10.13.0.35.1",
                               "pip install --no-deps tensorrt-stubs==10.13.0.35.1 (or run `make setup`)")) from exc
    root = Path(str(dist.locate_file("")))
    if not (root / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        raise Human3RError(msg("tensorrt-stubs", "installed files not found", str(root),
                               "tensorrt_bindings/tensorrt.pyi", "reinstall tensorrt-stubs"))
    return root


def write_repaired(out: Path, source_root: Path | None = None) -> list[RepairReport]:
    """Copy the stub packages from `source_root` (default: the installed dist) into `out`, repaired.

    Every .pyi is repaired and re-parsed; `py.typed` is added to each package; `REPAIRS.json` lists the fixes.
    Raises Human3RError when a file cannot be repaired or the TensorRT 10 API check fails.
    """
    src = source_root or find_installed_stubs()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    reports = []
    for pkg in STUB_PACKAGES:
        files = sorted((src / pkg).rglob("*.pyi"))
        if not files:
            raise Human3RError(msg("tensorrt-stubs", f"package {pkg} has no .pyi files", str(src / pkg)))
        for f in files:
            rel = f.relative_to(src)
            text, fixes = repair_source(f.read_text(encoding="utf-8"), str(rel))
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            reports.append(RepairReport(str(rel), fixes))
        (tmp / pkg / "py.typed").write_text("")
    problems = api_problems((tmp / "tensorrt_bindings" / "tensorrt.pyi").read_text(encoding="utf-8"))
    if problems:
        shutil.rmtree(tmp)
        raise Human3RError(msg("tensorrt-stubs", "repaired stubs do not carry the TensorRT 10 API",
                               "; ".join(problems), "execute_async_v3/set_tensor_address present, build_engine absent",
                               "install tensorrt-stubs==10.13.0.35.1"))
    (tmp / "REPAIRS.json").write_text(json.dumps(
        {"source": str(src), "distribution": _dist_version(), "files": [r.__dict__ for r in reports]}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return reports


def _dist_version() -> str | None:
    from importlib import metadata

    try:
        return f"{STUB_DIST}=={metadata.version(STUB_DIST)}"
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m human3r_edge.export.trt_stubs", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".typing", help="folder for the repaired stubs (mypy_path)")
    parser.add_argument("--source", default=None, help="site-packages folder holding the stubs (default: installed)")
    args = parser.parse_args(argv)
    try:
        reports = write_repaired(Path(args.out), Path(args.source) if args.source else None)
        stale = Path(args.out) / "human3r_edge"  # the symlink farm earlier versions wrote: the checkout has it now
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
    except Human3RError as exc:
        print(f"trt_stubs | {exc}", file=sys.stderr)
        return 1
    n = sum(len(r.fixes) for r in reports)
    print(f"trt_stubs: {len(reports)} stub files written to {args.out}/ with {n} repairs; TensorRT 10 API present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
