"""The import contracts in pyproject.toml name every module of the package.

import-linter checks only the modules a contract names: a new module left out of the layers
contract may import anything, and an engine module left out of the UI ban may import textual.
These tests fail for such a module and say where in pyproject.toml to add it.
"""

from __future__ import annotations

import pkgutil
import re
from functools import cache
from pathlib import Path
from typing import Any

import grimp
import tomllib

import chargpt_tui

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PACKAGE = chargpt_tui.__name__
LAYERS_CONTRACT = "Views sit above the engine; every arrow points down"
ENGINE_CONTRACT = "The engine never imports a UI library"
VIEWS_LAYER_MEMBER = "chargpt_tui.tui"  # the engine is every layer below this one's


def contracts() -> list[dict[str, Any]]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def contract(name: str) -> dict[str, Any]:
    return next(c for c in contracts() if c["name"] == name)


def layers() -> list[set[str]]:
    """The layers contract, top to bottom, each layer as the set of modules it names."""
    return [set(re.findall(r"[\w.]+", layer)) for layer in contract(LAYERS_CONTRACT)["layers"]]


def package_modules() -> list[str]:
    """Every module and subpackage directly under the package (a subpackage's modules belong
    to it: naming ``chargpt_tui.tui`` in a layer covers ``chargpt_tui.tui.app``)."""
    return sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(chargpt_tui.__path__))


@cache
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def neighbours(module: str) -> tuple[set[str], set[str]]:
    """The package's top-level modules that ``module`` (or a module inside it) imports, and
    those that import it."""
    graph = import_graph()
    inside = {module} | graph.find_descendants(module)

    def top_level(names: set[str]) -> set[str]:
        return {".".join(n.split(".")[:2]) for n in names if n.startswith(f"{PACKAGE}.")} - {module}

    imports = top_level({m for n in inside for m in graph.find_modules_directly_imported_by(n)})
    importers = top_level({m for n in inside for m in graph.find_modules_that_directly_import(n)})
    return imports, importers


def where_to_add(module: str, stack: list[set[str]]) -> str:
    """Where ``module`` goes: below the lowest layer importing it, above the highest it imports."""
    imports, importers = neighbours(module)
    index = {name: i for i, layer in enumerate(stack) for name in layer}
    lowest_importer = max((m for m in importers if m in index), key=index.get, default=None)
    highest_import = min((m for m in imports if m in index), key=index.get, default=None)
    place = [f"below {lowest_importer} (which imports it)"] if lowest_importer else []
    place += [f"above {highest_import} (which it imports)"] if highest_import else []
    return (f'add "{module}" to `layers` of the contract {LAYERS_CONTRACT!r} in pyproject.toml, '
            "as a layer of its own or joined with ' | ' to one, "
            f"{' and '.join(place) or 'anywhere'}")


def test_every_module_is_in_a_layer() -> None:
    stack = layers()
    named = set().union(*stack)
    missing = [m for m in package_modules() if m not in named]
    assert not missing, "\n".join(where_to_add(m, stack) for m in missing)


def test_the_contracts_name_only_modules_that_exist() -> None:
    graph = import_graph()
    for entry in contracts():
        names = [n for layer in entry.get("layers", []) for n in re.findall(r"[\w.]+", layer)]
        names += entry.get("source_modules", [])
        gone = [n for n in names if n.startswith(PACKAGE) and n not in graph.modules]
        assert not gone, (f"the contract {entry['name']!r} in pyproject.toml names modules that "
                          f"no longer exist: remove {', '.join(gone)}")


def test_every_engine_module_is_banned_from_the_ui_libraries() -> None:
    stack = layers()
    views_at = next(i for i, layer in enumerate(stack) if VIEWS_LAYER_MEMBER in layer)
    engine = set().union(*stack[views_at + 1 :])
    banned = set(contract(ENGINE_CONTRACT)["source_modules"])
    missing = sorted(engine - banned)
    assert not missing, (f"add {', '.join(repr(m) for m in missing)} to `source_modules` of the "
                         f"contract {ENGINE_CONTRACT!r} in pyproject.toml: "
                         "engine modules never import textual, rich or typer")
    views = sorted(banned - engine)
    assert not views, (f"{', '.join(views)} sit(s) above the engine in the layers contract but "
                       f"in {ENGINE_CONTRACT!r}: move it below the views or out of that list")
