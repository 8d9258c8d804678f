"""The folder tree is the data flow: a layer imports only the layers below it, and no cycles.

Read from the code (ast), so the shape stays true as the package grows. Imports under
`if TYPE_CHECKING:` count too: a type-only import against the order is still a wrong dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "esm_tcav"
LAYERS = ["io", "models", "engine", "concepts", "localize", "report", "run", "cli"]
# modules every layer may use: they import nothing of the package but each other
FOUNDATION = {"errors", "ui", "config", "_version"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    pkg = _module_name(path).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("esm_tcav"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("esm_tcav"):
                found.add(mod)
                # `from esm_tcav.x import y` may import submodule y
                for a in node.names:
                    if (PKG.parent / (mod.replace(".", "/") + f"/{a.name}.py")).exists():
                        found.add(f"{mod}.{a.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path):
            while imp not in modules and "." in imp:
                imp = imp.rsplit(".", 1)[0]
            if imp in modules and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package __init__: the public API, above everything
    head = parts[1]
    if head == "__main__":
        return "cli"
    if head in FOUNDATION:
        return "foundation"
    return head if head in LAYERS else head


def test_every_module_belongs_to_a_known_layer():
    unknown = {m for m in _graph() if _layer(m) not in (None, "foundation", *LAYERS)}
    assert not unknown, f"modules outside the layers {LAYERS}: {sorted(unknown)}"


def test_imports_follow_the_layer_order():
    order = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for module, deps in _graph().items():
        src = _layer(module)
        for dep in deps:
            dst = _layer(dep)
            if dst is None:
                bad.append(f"{module} -> {dep} (the public API is for users, not modules)")
            elif src == "foundation" and dst != "foundation":
                bad.append(f"{module} -> {dep} (foundation modules import no layer)")
            elif src in order and dst in order and order[dst] > order[src]:
                bad.append(f"{module} -> {dep} ({src} may not import {dst})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", ["transformers"])
def test_only_model_backends_import_model_libraries(name):
    """Model-specific libraries stay inside models/: the rest of the package sees the interface."""
    offenders = []
    for path in PKG.rglob("*.py"):
        module = _module_name(path)
        if module.startswith("esm_tcav.models"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == name or n.startswith(name + ".") for n in names):
                offenders.append(module)
    assert not offenders, f"{name} imported outside models/: {sorted(set(offenders))}"


BACKEND_MODULES = {
    "esm_tcav.models.esm2",
    "esm_tcav.models.esmc",
    "esm_tcav.models.t5",
    "esm_tcav.models.hf_encoder",
}


def test_only_backend_modules_know_a_model_family():
    """ESM-2 (its transformers classes, its module) stays in models/esm2.py: the rest of the
    package uses `models.base.ProteinLM` and `models.loading.load_model`, so a new backend is
    one module plus a registry entry."""
    offenders = []
    graph = _graph()
    for path in PKG.rglob("*.py"):
        module = _module_name(path)
        if module in BACKEND_MODULES:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "transformers":
                if any(a.name.startswith("Esm") for a in node.names):
                    offenders.append(f"{module} imports transformers' ESM classes")
        if any(dep in BACKEND_MODULES for dep in graph[module]):
            offenders.append(f"{module} imports a backend module directly")
    assert not offenders, "\n".join(sorted(offenders))


def test_the_architecture_doc_names_every_module():
    """docs/ARCHITECTURE.md is the map a maintainer reads first: it must not miss a module
    (regenerate its table with `python scripts/architecture_table.py`)."""
    doc = (PKG.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    missing = [
        path.relative_to(PKG).as_posix()
        for path in sorted(PKG.rglob("*.py"))
        if path.name != "__init__.py" or path.parent == PKG
        if f"`{path.relative_to(PKG).as_posix()}`" not in doc
    ]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"
