"""The package's floors, read statically from its imports (docs/architecture.md draws them).

A module may import from a lower floor, or from its own subpackage; never from a higher
floor or a sibling of its floor, and no chain of imports may come back to where it began.
Every import counts: top-level, inside functions and under ``TYPE_CHECKING`` (a cycle
hidden behind a late import is still a cycle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "topiq_loss"

#: Lowest first. A room is a subpackage or a root module (without ``.py``).
FLOORS: list[tuple[str, ...]] = [
    ("_errors", "_checks", "_compat"),
    ("models",),
    ("weights", "functional"),
    ("losses",),
    ("metrics", "training"),
    ("integrations",),
    ("cli",),
    ("__init__", "__main__"),
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, source: str, known: set[str]) -> set[str]:
    """The package modules ``source`` (module ``name``) imports, resolved and existing."""
    is_package = name == "topiq_loss" or f"{name}.__init__" in known or any(k.startswith(name + ".") for k in known)
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def add(target: str) -> None:
        # `from pkg import name`: name may be a module of pkg, else an attribute of pkg
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("topiq_loss"):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                mod = ".".join(root + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("topiq_loss"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                add(sub if sub in known else mod)
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Upward and sideways imports, and rooms missing from :data:`FLOORS`."""
    out = []
    for mod, targets in sorted(graph.items()):
        if room(mod) not in FLOOR:
            out.append(f"{mod}: its room {room(mod)!r} is on no floor")
            continue
        for t in sorted(targets):
            a, b = room(mod), room(t)
            if a == b:
                continue
            if FLOOR.get(b, 99) >= FLOOR[a]:
                out.append(f"{mod} (floor {FLOOR[a]}) imports {t} (floor {FLOOR.get(b)})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path.read_text(), known) for name, path in mods.items()}


def test_no_import_runs_up_or_sideways(graph):
    assert violations(graph) == []


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_root_holds_at_most_three_modules_and_five_subpackages():
    # __main__.py is the package's program (`python -m topiq_loss`), on the top floor with __init__.
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(root_modules) <= 3, root_modules
    assert len(subpackages) >= 5, subpackages
    assert set(subpackages) <= {r for rooms in FLOORS for r in rooms}


def test_checker_sees_an_upward_import_and_a_cycle(graph):
    # The checks above must be able to fail: the same graph with one upward import added.
    bad = {k: set(v) for k, v in graph.items()}
    bad["topiq_loss.models.backbone"].add("topiq_loss.losses.fr")
    found = violations(bad)
    assert any("topiq_loss.models.backbone (floor 1) imports topiq_loss.losses.fr" in v for v in found)
    assert any("topiq_loss.models.backbone" in c for c in cycles(bad))


def test_resolver_reads_every_spelling():
    known = {"topiq_loss", "topiq_loss.models", "topiq_loss.models.backbone", "topiq_loss.losses", "topiq_loss.losses.fr"}
    src = (
        "from .backbone import X\n"
        "from .. import losses\n"
        "def f():\n    from ..losses.fr import Y\n"
        "import topiq_loss.losses.fr\n"
    )
    got = imports_of("topiq_loss.models.layers", src, known | {"topiq_loss.models.layers"})
    assert got == {"topiq_loss.models.backbone", "topiq_loss.losses", "topiq_loss.losses.fr"}
