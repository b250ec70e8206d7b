"""The package's import structure: no import cycle anywhere in fast_s2s (imports inside functions
count), and no private name (a leading underscore) imported from another module; a private
module (fast_s2s._extension) may be imported, a private function or class may not."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where each package's sources live (fast_s2s.kernels is installed from kernels/)
PACKAGES = {"fast_s2s": ROOT / "fast_s2s", "fast_s2s.kernels": ROOT / "kernels"}
# compiled modules: they import nothing of the package
EXTENSIONS = ("fast_s2s._C",)


def modules() -> dict[str, Path]:
    """Every module of fast_s2s by dotted name (a package by its __init__.py)."""
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found | dict.fromkeys(EXTENSIONS, None)


def imports(name: str, path: Path | None, known: dict) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import in the file, anywhere."""
    if path is None:  # a compiled module
        return []
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if sub in known else (base, alias.name))
    return [(m, n) for m, n in out if m in known]


def test_no_import_cycles():
    known = modules()
    graph = {
        name: {m for m, _ in imports(name, path, known) if m != name}
        for name, path in known.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_module():
    known = modules()
    crossing = [
        f"{name} imports {taken} from {module}"
        for name, path in known.items()
        for module, taken in imports(name, path, known)
        if taken is not None and taken.startswith("_") and not taken.startswith("__")
    ]
    assert not crossing, "\n".join(crossing)


def test_the_checks_see_the_package():
    """The walk finds the modules and their imports (an empty graph would pass vacuously)."""
    known = modules()
    assert "fast_s2s.models.decoding.api" in known and "fast_s2s.kernels.attention_ops" in known
    api = {
        m
        for m, _ in imports(
            "fast_s2s.models.decoding.api", known["fast_s2s.models.decoding.api"], known
        )
    }
    assert "fast_s2s.models.decoding.static_loop" in api


def test_no_search_engine_imports_another():
    """The decoding engines (docs/DESIGN.md, "Decoding") share the spec, rules and result, never
    each other's code."""
    known = modules()
    engines = {
        f"fast_s2s.models.decoding.{n}" for n in ("python_loop", "native_loop", "static_loop")
    }
    crossing = [
        f"{engine} imports {module}"
        for engine in sorted(engines)
        for module, _ in imports(engine, known[engine], known)
        if module in engines - {engine}
    ]
    assert not crossing, "\n".join(crossing)
