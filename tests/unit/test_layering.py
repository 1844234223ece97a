"""The layout is the architecture: every import in src/openknn (function-level ones included)
goes to the importer's own layer or a lower one, and no modules import each other in a cycle.

The import graph is read with ``ast`` (no module is imported, so a slow or broken import
cannot hide an edge), and the two checks are plain functions over it, each tested on a small
package built here that has the fault it must find."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

import openknn

SRC = Path(openknn.__file__).parent

# Lowest first. A module may import from its own layer and the layers before it. errors and
# settings are the base every layer uses; cli, quickstart and the package itself (its lazy
# public API) sit on top. "pkg.*" names a package and everything in it; other names one module.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("openknn.errors", "openknn.settings"),
    ("openknn.core.*",),
    ("openknn.formats.*",),
    ("openknn.jobs.*",),
    ("openknn.serving.*",),
    ("openknn.distributed.*",),
    ("openknn.sdk.*",),
    ("openknn.service.*",),
    ("openknn.bench.*",),
    ("openknn.quickstart", "openknn.cli", "openknn.__main__", "openknn"),
)


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` (the directory of ``package``) by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The dotted names one import statement in module ``name`` refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = name.split(".")
        base = base if is_package else base[:-1]
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # ``from pkg import sub`` imports the submodule pkg.sub where one exists (kept here as
    # pkg.sub; ``internal`` below trims names of attributes back to their module)
    return [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its body (``if TYPE_CHECKING``
    blocks included: a type a lower layer names from a higher one is still a dependency)."""
    mods = modules(root, package)

    def internal(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(name, node, path.name == "__init__.py"):
                    module = internal(target)
                    # a package's own __init__ is run by importing anything inside it; it is
                    # not an edge of its own (``from . import x`` names x, not the package)
                    if module is not None and module != name and not name.startswith(
                            f"{module}."):
                        edges.add(module)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int:
    """The layer that names ``module``: exactly, or as a package ("pkg.*") holding it."""
    for rank, names in enumerate(layers):
        for name in names:
            package = name.removesuffix(".*")
            if module == package or (name.endswith(".*") and module.startswith(f"{package}.")):
                return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def upward(graph: Mapping[str, set[str]], layers: Sequence[Sequence[str]]) -> list[str]:
    """Each import from a lower layer into a higher one, as 'importer -> imported'."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer_of(b, layers) > layer_of(a, layers))


# ---------------------------------------------------------------- openknn itself


def test_openknn_has_no_import_cycle() -> None:
    assert cycles(import_graph(SRC, "openknn")) == []


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward(import_graph(SRC, "openknn"), LAYERS) == []


def test_every_module_has_a_layer_and_the_graph_is_real() -> None:
    graph = import_graph(SRC, "openknn")
    assert {layer_of(m, LAYERS) for m in graph} == set(range(len(LAYERS)))
    # edges the layout is built on, so an empty graph (a parsing slip) cannot pass
    assert "openknn.core.model" in graph["openknn.jobs.artifact"]
    assert "openknn.serving.app" in graph["openknn.distributed.serving"]
    assert "openknn.distributed.serving" in graph["openknn.cli"]  # a function-level import


def test_the_sdk_loads_no_server_stack() -> None:
    """A notebook that only trains and predicts does not pay for uvicorn, starlette or Ray."""
    code = ("import openknn.sdk, sys; "
            "print(sorted(m for m in ('uvicorn', 'starlette', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_nothing_in_src_names_the_shared_folder() -> None:
    """A clone has no ../shared: code and its messages cite docs/ instead."""
    named = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if "../shared" in p.read_text(encoding="utf-8")]
    assert named == []


# ---------------------------------------------------------------- the checks find faults


def package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


LOW_HIGH = (("pkg.low.*",), ("pkg.high.*", "pkg"))


def test_a_clean_package_passes(tmp_path: Path) -> None:
    root = package(tmp_path, {"low/__init__.py": "", "low/a.py": "import os\n",
                              "high/__init__.py": "", "high/b.py": "from ..low import a\n"})
    graph = import_graph(root, "pkg")
    assert graph["pkg.high.b"] == {"pkg.low.a"}
    assert cycles(graph) == [] and upward(graph, LOW_HIGH) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": "from . import b\n",
        "low/b.py": "def f():\n    from .c import g\n    return g\n",
        "low/c.py": "from pkg.low.a import x\n",
    })
    assert cycles(import_graph(root, "pkg")) == [["pkg.low.a", "pkg.low.b", "pkg.low.c"]]


def test_an_upward_import_in_a_type_checking_block_is_found(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from ..high.b import B\n"),
        "high/__init__.py": "",
        "high/b.py": "class B: ...\n",
    })
    graph = import_graph(root, "pkg")
    assert upward(graph, LOW_HIGH) == ["pkg.low.a -> pkg.high.b"]
    assert cycles(graph) == []


def test_a_module_outside_every_layer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"pkg.stray is in no layer"):
        layer_of("pkg.stray", (("pkg.low.*", "pkg"),))
