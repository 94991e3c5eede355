"""The layer table (docs/layers.toml), kept true: a module imports only from its own layer or
lower. A new module fails here until it is placed in the table on purpose; packages' `__init__`
modules are modules like any other.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import sockgate

TABLE = Path(__file__).resolve().parents[1] / "docs" / "layers.toml"
LAYERS: dict[int, list[str]] = {
    layer["level"]: layer["modules"] for layer in tomllib.loads(TABLE.read_text())["layer"]
}
LAYER_OF = {name: level for level, names in LAYERS.items() for name in names}
ROOT = Path(sockgate.__file__).parent
# Dotted names from the package root, a package's own module as PACKAGE.__init__.
FILES = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in ROOT.rglob("*.py")}
PACKAGES = {
    name.removesuffix("__init__").rstrip(".") for name in FILES if name.endswith("__init__")
}
MODULES = sorted(FILES)
# Layers 0 and 1 are pure: no event loop, no sockets, no processes, no threads.
IMPURE = {"asyncio", "socket", "selectors", "subprocess", "threading", "signal", "uvloop"}


def module_of(target: str) -> str:
    """The table's name for what an import reaches: a package stands for its __init__."""
    if target in PACKAGES:
        return f"{target}.__init__" if target else "__init__"
    return target


def resolve(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The sockgate modules (or packages) an import statement reaches."""
    if isinstance(node, ast.Import):
        bases = [a.name.split(".") for a in node.names]
        return [".".join(b[1:]) for b in bases if b[0] == "sockgate"]
    if node.level:
        package = importer.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
    elif node.module and node.module.split(".")[0] == "sockgate":
        base = []
    else:
        return []
    parts = [
        p for p in (node.module or "").split(".") if p and not (not node.level and p == "sockgate")
    ]
    target = ".".join(base + parts)
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}" if target else alias.name
        found.append(sub if sub in FILES or sub in PACKAGES else target)
    return found


def imports(module: str) -> list[tuple[int, str]]:
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    return [
        (node.lineno, target)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in resolve(module, node)
    ]


def test_the_package_was_found() -> None:
    assert {"errors", "config.__init__", "http.parse", "engine.client"} <= set(MODULES)
    assert "cli.__init__" in MODULES


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in MODULES if name not in LAYER_OF]
    assert unplaced == [], f"place these modules in {TABLE.name}: {unplaced}"


def test_the_table_names_only_modules_that_exist() -> None:
    stale = sorted(name for name in LAYER_OF if name not in FILES)
    assert stale == [], f"{TABLE.name} names modules that are gone: {stale}"


def test_a_module_is_placed_once() -> None:
    placed = [name for names in LAYERS.values() for name in names]
    assert sorted(placed) == sorted(set(placed))


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_from_its_layer_or_lower(module: str) -> None:
    layer = LAYER_OF.get(module)
    if layer is None:
        pytest.fail(f"{module} is not in the layer table")
    bad = sorted(
        {
            f"line {line}: {target} (layer {LAYER_OF.get(module_of(target), '?')})"
            for line, target in imports(module)
            if LAYER_OF.get(module_of(target), 99) > layer
        }
    )
    assert bad == [], f"{module} (layer {layer}) imports from above: {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if LAYER_OF.get(m, 99) <= 1])
def test_pure_layers_do_no_io(module: str) -> None:
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    used = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and not node.level
            else []
        )
    }
    assert used & IMPURE == set()
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "print" not in calls


def test_resolve_understands_every_import_form() -> None:
    def targets(source: str, importer: str) -> list[str]:
        node = ast.parse(source).body[0]
        assert isinstance(node, ast.Import | ast.ImportFrom)
        return resolve(importer, node)

    assert targets("from ..errors import ConfigError", "config.loader") == ["errors"]
    assert targets("from .. import errors", "engine.client") == ["errors"]
    assert targets("from ..http import headers, parse", "engine.client") == [
        "http.headers",
        "http.parse",
    ]
    assert targets("from . import __version__", "cli") == [""]
    assert targets("from ..config import App", "nginx.render") == ["config"]
    assert targets("from .model import App", "config.__init__") == ["config.model"]
    assert targets("from .tree import block", "nginx.render") == ["nginx.tree"]
    assert targets("from .. import config", "demo.run") == ["config"]
    assert targets("from sockgate.cli import main", "__main__") == ["cli"]
    assert targets("import sockgate.engine.client", "engine.server") == ["engine.client"]
    assert targets("from sockgate.engine import client", "cli") == ["engine.client"]
    assert targets("import asyncio", "engine.server") == []
    assert module_of("config") == "config.__init__"
    assert module_of("") == "__init__"
    assert module_of("http.parse") == "http.parse"
