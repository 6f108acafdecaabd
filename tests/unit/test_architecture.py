"""The import graph of echoprime/ is layered and acyclic, read from the source (AST), never imported.

Every ``import`` and ``from ... import`` counts, at module level and inside functions alike (an
import deferred into a function is still a dependency; it only hides the cycle from Python),
except those under ``if TYPE_CHECKING:``, which never run. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``; relative imports are resolved. A module
imported by name counts too: ``importlib.import_module("x")`` with a literal name, and a string
that is exactly a dotted module name under ``ray``, ``ray_jobs`` or ``serve`` (a table of jobs
to import later). The plugin tables of ``models`` and ``datasets`` (their own modules named in
strings) are not edges: a registry imports its plugins on first use and they import it to
register, by design and within one package.

Three rules:

- no cycle among echoprime modules;
- no import from a lower layer into a higher one (``LAYERS`` below, mirrored in the "Layers"
  section of docs/architecture.md: change both together);
- echoprime never imports ``ray``, ``ray_jobs`` or ``serve``: Ray is plumbing around the library.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "echoprime"

# The layers, bottom to top: a module may import modules of its own layer or of a lower one.
# An entry names a top-level module or subpackage of echoprime ("" is echoprime/__init__.py) and
# covers everything under it, unless a longer entry names the module itself ("data.shards").
LAYERS: tuple[tuple[str, ...], ...] = (
    # L0 foundation: taxonomy, storage, keys and locks, the sector geometry, settings, losses and
    # the scores training logs; nothing here imports another layer
    ("", "taxonomy", "storage", "signing", "locks", "sector", "runlog", "config", "losses", "metrics"),
    # L1 formats: clip files in (io), the model's clip (preprocess), shard rows out (data.shards:
    # the Parquet contract both ingest and the synthetic cohort write)
    ("io", "preprocess", "data.shards"),
    # L2 report text and labels, the networks, report retrieval
    ("reports", "models", "retrieval"),
    # L3 the model bundle; the synthetic cohort (patients, videos, reports, files)
    ("bundle", "synth"),
    # L4 the data pipeline: ingest, de-identification, the synthetic training stream
    ("data",),
    # L5 training and staging its outputs
    ("training", "staging"),
    # L6 interpretation (one path for a study) and the released-weights adapter
    ("inference", "release"),
    # L7 evaluation, building a bundle's bank and attention, hospital integration, public
    # datasets, the service's library logic
    ("eval", "bundle_build", "hospital", "datasets", "api"),
    # L8 entry points: batch interpretation's steps, the commands' library halves, the CLIs
    ("batch_interpret", "batch_run", "commands", "interpret_cli", "sign_cli", "cli"),
)

# Packages echoprime must never import: the library runs without Ray; the adapters import it.
FORBIDDEN = ("ray", "ray_jobs", "serve")

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` (dotted module names) at line ``line`` of ``file``."""

    source: str
    target: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def _modules(package: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``package`` (a package's is its __init__.py)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _live_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those in the body of an ``if TYPE_CHECKING:`` (its else runs)."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        elif not _is_logger_call(node):  # a logger's name ("ray.serve") names no module to import
            stack.extend(ast.iter_child_nodes(node))
    return found


def _is_logger_call(node: ast.AST) -> bool:
    """``logging.getLogger(...)`` / ``getLogger(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == "getLogger"


def _imported_by_name(node: ast.AST) -> str | None:
    """The module of ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name,
    or a string that is exactly a dotted name under a forbidden package (``"ray_jobs.ingest"`` in a
    table of modules imported later by name); else None."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return node.args[0].value
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
        return node.value if _names_forbidden_module(node.value) else None
    return None


def _names_forbidden_module(name: str) -> bool:
    """``ray.<anything>``, or a module of this repository's ``ray_jobs`` / ``serve`` that exists
    (``"serve.yaml"``, a file name, is not one)."""
    top = name.split(".")[0]
    if top == "ray":
        return True
    if top not in FORBIDDEN:
        return False
    where = PACKAGE.parent.joinpath(*name.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module ``from .x import y`` names, relative to ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(modules: dict[str, Path], root: Path) -> list[Edge]:
    """Every import edge out of ``modules`` (targets outside them included); files are named
    relative to ``root``."""
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        file = path.relative_to(root).as_posix()
        for node in _live_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, is_package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            elif named := _imported_by_name(node):
                targets = [named]
            else:
                continue
            edges += [Edge(module, t, file, node.lineno) for t in dict.fromkeys(targets)]
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def _layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest entry covering ``module`` (None: no entry)."""
    layer = {name: index for index, names in enumerate(LAYERS) for name in names}
    parts = module.split(".")[1:]
    if not parts:
        return layer.get("")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in layer:
            return layer[".".join(parts[:n])]
    return None


def _internal(edges: list[Edge], modules: dict[str, Path]) -> list[Edge]:
    return [e for e in edges if e.target in modules and e.target != e.source]


def _cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One chain per strongly connected component with more than one module (Tarjan), each a
    closed walk through the component, so that the message shows where to cut."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_chain(graph, set(c), c[0]) for c in components]


def _chain(graph: dict[str, list[Edge]], component: set[str], start: str) -> list[Edge]:
    """A shortest closed walk from ``start`` back to it inside ``component`` (breadth first)."""
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in component or edge.target in came:
                    continue
                came[edge.target] = edge
                following.append(edge.target)
        if start in came:
            break
        frontier = following
    chain = [came[start]]
    while chain[0].source != start:
        chain.insert(0, came[chain[0].source])
    return chain


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules(PACKAGE)
    return modules, _edges(modules, PACKAGE.parent)


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    missing = sorted(m for m in modules if _layer_of(m) is None)
    assert not missing, (
        f"modules in no layer (add them to LAYERS here and in docs/architecture.md): {missing}"
    )


def test_no_import_cycle(graph):
    modules, edges = graph
    live = _internal(edges, modules)
    cycles = _cycles(live)
    message = "\n\n".join(
        " -> ".join([chain[0].source] + [e.target for e in chain])
        + "\n"
        + "\n".join("  " + e.where() for e in chain)
        for chain in cycles
    )
    assert not cycles, f"import cycles among echoprime modules:\n{message}"


def test_no_import_from_a_lower_layer_into_a_higher_one(graph):
    modules, edges = graph
    upward = [
        e
        for e in _internal(edges, modules)
        if (lo := _layer_of(e.source)) is not None and (hi := _layer_of(e.target)) is not None and hi > lo
    ]
    message = "\n".join(f"  {e.where()} (L{_layer_of(e.source)} -> L{_layer_of(e.target)})" for e in upward)
    assert not upward, f"imports from a lower layer into a higher one (see LAYERS):\n{message}"


def test_echoprime_never_imports_ray_or_the_adapters(graph):
    _, edges = graph
    bad = [e for e in edges if any(e.target == f or e.target.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, (
        "echoprime must not import " + ", ".join(FORBIDDEN) + ":\n" + "\n".join("  " + e.where() for e in bad)
    )


def test_the_walk_reads_imports_as_documented(tmp_path):
    """The rules above hold only if the walk sees what Python would run: checked on a made-up package."""
    pkg = tmp_path / "echoprime"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from echoprime import b\nelse:\n    import json\n",
        "b.py": "def f():\n    from .sub import c, helper\n",
        "sub/__init__.py": "helper = 1\n",
        "sub/c.py": "import importlib\nJOBS = {'x': 'ray_jobs.ingest', 'doc': 'see ray.data'}\n"
        "def g():\n    return importlib.import_module('echoprime.b')\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    modules = _modules(pkg)
    edges = {(e.source, e.target, e.line) for e in _edges(modules, tmp_path)}
    assert edges == {
        ("echoprime.a", "typing", 1),
        ("echoprime.a", "json", 5),  # the else of TYPE_CHECKING runs; its body does not
        ("echoprime.b", "echoprime.sub.c", 2),  # a module named in `from pkg import`
        ("echoprime.b", "echoprime.sub", 2),  # a plain name in it: the package
        ("echoprime.sub.c", "importlib", 1),
        ("echoprime.sub.c", "ray_jobs.ingest", 2),  # a module named to be imported later
        ("echoprime.sub.c", "echoprime.b", 4),
    }
    chains = _cycles(_internal(_edges(modules, tmp_path), modules))
    assert [[(e.source, e.target) for e in chain] for chain in chains] == [
        [("echoprime.b", "echoprime.sub.c"), ("echoprime.sub.c", "echoprime.b")]
    ]
