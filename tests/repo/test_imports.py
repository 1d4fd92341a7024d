"""The library's imports: no cycle among wemoe's modules, and every module imports without gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "wemoe"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for file in sorted(package.rglob("*.py")):
        parts = file.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> modules of the package it imports``, from every import statement at any depth (module level, in
    functions, in ``if TYPE_CHECKING``). ``from pkg import name`` counts ``pkg`` and, if it is a module, ``pkg.name``;
    an import of a name inside a module counts as the module."""
    root = PACKAGE.name
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        here = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here[: len(here) - (node.level - 1)]
                    base = ".".join(parent + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] == root:
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    edges = import_graph(module_files())
    assert "wemoe.loading" in edges["wemoe"]  # inside wemoe.__getattr__ (the lazy wemoe.load_zoo)
    assert "wemoe.zoo.zoo" in edges["wemoe.zoo.sources"]
    assert len(edges) > 30 and sum(map(len, edges.values())) > 50


def test_no_import_cycle_in_wemoe():
    found = cycles(import_graph(module_files()))
    assert not found, "import cycles in wemoe/:\n" + "\n".join(" <-> ".join(c) for c in found)


BLOCKED_GRADIO = """
import importlib, pkgutil, sys
sys.modules["gradio"] = None  # any `import gradio` now raises ImportError
import wemoe
names = sorted(m.name for m in pkgutil.walk_packages(wemoe.__path__, "wemoe."))
for name in names:
    importlib.import_module(name)
assert sys.modules["gradio"] is None
print(len(names))
"""


def test_every_wemoe_module_imports_without_gradio():
    done = subprocess.run([sys.executable, "-c", BLOCKED_GRADIO], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip().splitlines()[-1]) == len(module_files()) - 1  # every module but wemoe itself


# The library's layers, bottom first: a module may import its own layer and those below, never one above. Data flows
# up: weights in (zoo), images and heads in (tasks), the MoE layer, the merge methods, adaptation, evaluation, the
# workbench that puts them together for a user, the analyses over a workbench, the pocket benchmark built with all of
# them, and the face (``wemoe``, ``wemoe.loading``, the CLI).
LAYERS = (
    ("leaves", ("wemoe._torchvision_compat", "wemoe.errors", "wemoe.params", "wemoe.stopping", "wemoe.task_vector")),
    ("zoo", ("wemoe.zoo",)),
    ("tasks", ("wemoe.tasks",)),
    ("moe", ("wemoe.moe",)),
    ("methods", ("wemoe.methods",)),
    ("adaptation", ("wemoe.adaptation",)),
    ("evaluation", ("wemoe.evaluation",)),
    ("workbench", ("wemoe.workbench",)),
    ("analysis", ("wemoe.analysis",)),
    ("pocket", ("wemoe.pocket",)),
    ("face", ("wemoe", "wemoe.loading", "wemoe.zoo_tasks", "wemoe.__main__", "wemoe.tools")),
)


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module`` (the longest prefix that names a layer's package or module)."""
    best, index = "", None
    for i, (_, roots) in enumerate(LAYERS):
        for root in roots:
            if (module == root or module.startswith(root + ".")) and len(root) > len(best):
                best, index = root, i
    if index is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/repo/test_imports.py")
    return index


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``"a (layer) -> b (layer)"`` for every import of a module from a higher layer (``wemoe`` itself aside: every
    import of a submodule runs it first anyway)."""
    found = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets - {"wemoe"}):
            if layer_of(target) > layer_of(module):
                found.append(f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    return found


def test_the_layer_check_finds_an_upward_import():
    edges = {"wemoe.zoo.sources": {"wemoe.errors", "wemoe.workbench.workbench"}, "wemoe.analysis.cost": {"wemoe.zoo"}}
    assert upward_imports(edges) == ["wemoe.zoo.sources (zoo) -> wemoe.workbench.workbench (workbench)"]


def test_every_module_is_in_a_layer_and_imports_only_downward():
    edges = import_graph(module_files())
    found = upward_imports(edges)
    assert not found, "imports that run upward through the layers:\n" + "\n".join(found)


def test_the_top_of_wemoe_holds_the_face_and_a_few_shared_leaves():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert {".".join(("wemoe", p.removesuffix(".py"))) for p in top} - {"wemoe.__init__"} <= {
        root for _, roots in (LAYERS[0], LAYERS[-1]) for root in roots}
