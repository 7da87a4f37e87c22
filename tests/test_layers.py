"""The import graph pins the layers (jaxfit/_src/README.md): no upward imports,
nothing under _src imports the public package, the adapters use only the core, and
no two modules import each other (directly or around a cycle). Imports inside
functions count as much as those at the top."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "jaxfit" / "_src"
# bottom to top; a package imports only from its own layer or those below it
LAYERS = [
    "startup",
    "errors",
    "paths",
    "core",
    "data",
    "report",
    "checkpoint",
    "driver",
    "callbacks",
    "adapters",
    "runner",
    "sweep",
    "app",
]
ONLY = {"adapters": {"errors", "core", "adapters"}}  # stricter than the order


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("jaxfit", "_src") + parts)] = path
    return found


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import name`: the module pkg.name, or else pkg itself
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "jaxfit" or name.startswith("jaxfit.")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "app"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path):
            while name not in modules and "." in name:  # `from pkg import name`
                name = name.rsplit(".", 1)[0]
            if name in modules and name not in (module, "jaxfit._src"):
                targets.add(name)
        graph[module] = targets
    return graph


def test_nothing_under_src_imports_the_public_package():
    offenders = sorted(
        f"{module} imports {name}"
        for module, path in _modules().items()
        for name in _imports(path)
        if not name.startswith("jaxfit._src.")
    )
    assert not offenders, offenders


def test_no_upward_imports():
    offenders = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            allowed = ONLY.get(layer)
            upward = (
                other not in allowed
                if allowed
                else LAYERS.index(other) > LAYERS.index(layer)
            )
            if upward:
                offenders.append(f"{module} ({layer}) imports {target} ({other})")
    assert not offenders, "\n".join(sorted(offenders))


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_layers_are_the_packages():
    packages = {
        path.name
        for path in SRC.iterdir()
        if path.is_dir() and (path / "__init__.py").exists()
    }
    assert packages <= set(LAYERS), packages - set(LAYERS)
