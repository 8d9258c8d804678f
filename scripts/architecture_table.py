"""Print the module map of docs/ARCHITECTURE.md from the code itself.

One row per module: its layer, the first line of its docstring, and the package modules it
imports (read with ast, as tests/test_architecture.py does). Paste the output between the
`<!-- modules -->` markers of the doc; the architecture test fails when a module is missing.

    python scripts/architecture_table.py > /tmp/modules.md
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_architecture import PKG, _graph, _layer, _module_name  # noqa: E402


def main() -> None:
    graph = _graph()
    rows = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") and path.parent != PKG:
            continue
        name = _module_name(path)
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        deps = sorted(d.removeprefix("esm_tcav.") for d in graph[name])
        rel = path.relative_to(PKG).as_posix()
        rows.append((_layer(name) or "api", rel, first, ", ".join(deps) or "—"))
    order = ["foundation", "io", "models", "engine", "concepts", "localize", "report", "run", "cli"]
    rows.sort(key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[1]))
    print("| layer | module | why it exists | imports (package modules) |")
    print("|---|---|---|---|")
    for layer, rel, first, deps in rows:
        print(f"| {layer} | `{rel}` | {first} | {deps} |")


if __name__ == "__main__":
    main()
