"""The layout holds: dependencies point the documented way and no modules import each other in a cycle.

docs/design.md: cli -> agent, protocol; agent -> protocol; server -> protocol; protocol
depends on none of them. The one exception is `helpline server run`, which calls into
server/ from cli/commands/server.py (imported lazily, inside the command).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("agent", "cli", "protocol", "server")
ALLOWED = {
    "protocol": set(),
    "agent": {"protocol"},
    "server": {"protocol"},
    "cli": {"agent", "protocol"},
}
# (importing module, imported part): the documented exceptions.
EXCEPTIONS = {("cli.commands.server", "server")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


def _imports(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names of the modules ``module`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under `if TYPE_CHECKING:` or try/except at module level count too
        nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


SOURCES = _sources()


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_dependencies_point_the_documented_way(module: str) -> None:
    own = module.split(".")[0]
    wrong = sorted(
        name for name in _imports(module, SOURCES[module], top_level_only=False)
        if (part := name.split(".")[0]) in PARTS and part != own
        and part not in ALLOWED[own] and (module, part) not in EXCEPTIONS
    )
    assert not wrong, f"{module} imports {wrong}; {own}/ may depend on {sorted(ALLOWED[own]) or 'nothing'} only"


def test_no_import_cycles_between_modules() -> None:
    graph = {
        # A package is initialised before its modules anyway, so an edge to one's own package is no cycle.
        module: {name for name in _imports(module, path, top_level_only=True)
                 if name in SOURCES and name != module and not module.startswith(name + ".")}
        for module, path in SOURCES.items()
    }
    # Tarjan's strongly connected components; any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


IDENTITY_MODULES = {"agent.link", "agent.store", "agent.identity"}


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("cli.")))
def test_the_cli_reaches_the_pcs_identity_only_through_this_pc(module: str) -> None:
    """A command acting as the PC goes through agent.local.this_pc(), so the agent service can answer it instead."""
    used = {name for name in _imports(module, SOURCES[module], top_level_only=False)
            if name in IDENTITY_MODULES or name.rpartition(".")[0] in IDENTITY_MODULES}
    assert not used, f"{module} uses {sorted(used)}; go through agent.local.this_pc()"
