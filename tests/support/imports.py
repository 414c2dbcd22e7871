"""The project's import graph, read from the source with `ast` (nothing is imported): for the layout tests."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "human3r_edge"
# import name of each top-level folder (human3r_edge/<name> is a symlink to it in the checkout)
ROOTS = {"human3r_edge": REPO / "human3r_edge", "human3r_edge.export": REPO / "export",
         "human3r_edge.runtime": REPO / "runtime", "human3r_edge.kernels": REPO / "kernels",
         "human3r_edge.benchmarks": REPO / "benchmarks"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (resolved to a file of the project), or the raw name for an outside module
    line: int
    lazy: bool  # inside a function (imported when it runs), not at module level
    resolved: bool  # a project import that names a file


def modules() -> dict[str, Path]:
    """Every project module: import name -> file (packages as their __init__.py)."""
    out: dict[str, Path] = {}
    for root, folder in ROOTS.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder)
            if root == PACKAGE and len(rel.parts) > 1:
                continue  # human3r_edge/<sub> are the symlinks to the other roots
            if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([root, *parts]) if parts else root] = f
    return out


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def edges() -> list[Edge]:
    """Every import statement of every project module, module-level and inside functions."""
    mods = modules()
    out: list[Edge] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if _is_package(name, mods) else name.rpartition(".")[0]
        lazy_nodes: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy_nodes.update(id(n) for n in ast.walk(fn) if n is not fn)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import sub` imports the submodule when it is one
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            else:
                continue
            for t in dict.fromkeys(targets):
                ours = t == PACKAGE or t.startswith(PACKAGE + ".")
                out.append(Edge(name, t, node.lineno, id(node) in lazy_nodes, (t in mods) if ours else False))
    return out


def project_graph(include_lazy: bool = True) -> dict[str, set[str]]:
    """module -> project modules it imports (a package import counts as its __init__)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for e in edges():
        if e.resolved and e.target != e.source and (include_lazy or not e.lazy):
            graph[e.source].add(e.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out
