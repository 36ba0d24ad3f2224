"""The import structure docs/ARCHITECTURE.md documents: every import under src/safealign (at the top of a module or
inside a function) goes to the module's own layer or one below it, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "safealign"

# low → high; a module may import from its own layer and the layers before it (docs/ARCHITECTURE.md, "Layers")
LAYERS = [
    {"errors"},
    {"io", "stats", "records", "config", "progress"},
    {"models"},
    {"data"},
    {"generate"},
    {"judges"},
    {"eval"},
    {"recipes"},
    {"report"},
    {"dryrun"},
    {"pipeline"},
    {"serve"},
    {"commands", "cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """The safealign modules ``path`` imports (``from safealign import io`` counts as ``safealign.io``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("safealign"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("safealign")}
    return {m for m in out if m != "safealign"}  # the package's own __init__ (its version) sits below everything


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYER, f"{module} is in no layer: add its package to LAYERS and to docs/ARCHITECTURE.md"
    return LAYER[top]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def test_no_import_goes_up_the_layers():
    upward = sorted(f"{a} -> {b}" for a, bs in graph().items() if a != "safealign" for b in bs
                    if layer_of(b) > layer_of(a))
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n])
            elif n in g and state.get(n) is None:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if state.get(m) is None:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_walk_sees_what_it_should():
    g = graph()
    assert "safealign.io" in g["safealign.generate"] and "safealign.pipeline.stages" in g["safealign.pipeline.plan"]
    assert layer_of("safealign.judges.guard") < layer_of("safealign.eval.run") < layer_of("safealign.pipeline")
