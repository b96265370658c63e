"""The package layout is the architecture: lower layers never import upper ones, and no
module imports itself back through others. Every import counts, at the top of a module or
inside a function (an import deferred to a function is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("codeglm", "lsp", "evals")

# Lowest first. A unit may import units of its own layer and of the layers below it.
# See docs/architecture.md ("Layers") for what each owns.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("codeglm", "codeglm.languages", "codeglm.paths", "codeglm.defaults"),  # plain tables and places
    ("codeglm.syntax", "codeglm.model"),  # tree-sitter; the model as transformers classes
    ("codeglm.inference",),  # engine, decode path, caches, sampling, int8, kernels
    ("codeglm.backends",),  # the one door to a model
    ("codeglm.completion", "codeglm.train"),
    ("codeglm.translation", "codeglm.server"),  # translation reuses completion's post-processing
    ("lsp", "evals"),  # the language server; the HumanEval-X harness
    ("codeglm.cli",),  # the command line wires everything
)


def modules(root: Path = PROJECT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "codeglm" and len(parts) > 1 else parts[0]


def import_graph(root: Path = PROJECT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (``from a import b`` counts ``a.b`` when
    that is a module, else ``a``)."""
    known = modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                target = resolve(name)
                # A package's own __init__ is imported on the way to its modules: not an edge.
                if target and target != module and not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    return graph


def layer_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit} is in no layer of LAYERS: add it where it belongs")


def test_every_unit_has_a_layer() -> None:
    for module in modules():
        layer_of(unit_of(module))


def test_no_import_goes_up_a_layer() -> None:
    upward = sorted(
        f"{module} ({unit_of(module)}, layer {layer_of(unit_of(module))}) imports {target} "
        f"({unit_of(target)}, layer {layer_of(unit_of(target))})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(unit_of(target)) > layer_of(unit_of(module))
    )
    assert not upward, "\n".join(upward)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    """The check itself: an import inside a function (how the old cycles hid) closes a cycle."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("thing = 1\n\n\ndef late():\n    from pkg import a\n    return a\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
