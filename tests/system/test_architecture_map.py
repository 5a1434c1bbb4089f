"""The architecture map (docs/architecture.md, "Layers and packages") follows the code: its table
names the owner of every table in Base.metadata (the folder whose module defines the table's mapped
class or Table), each table once, and its list of layer rules names exactly the contracts of
[tool.importlinter]."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from sqlalchemy import Table

ROOT = Path(__file__).resolve().parents[2]


def architecture_section() -> str:
    page = (ROOT / "docs" / "architecture.md").read_text()
    found = re.search(r"^## Layers and packages\n(.*?)(?=^## )", page, re.S | re.M)
    assert found, "docs/architecture.md has no '## Layers and packages' section"
    return found.group(1)


def page_owners() -> dict[str, list[str]]:
    """Table → the folders the page's map gives it (a table listed twice has two)."""
    owners: dict[str, list[str]] = {}
    for folder, cell in re.findall(r"^\| `(app/[^`]+)/` \| (.+?) \|$", architecture_section(), re.M):
        for table in re.findall(r"`([^`]+)`", cell):
            owners.setdefault(table, []).append(folder.replace("/", "."))
    return owners


def package_of(module: str) -> str:
    """The folder of app/ a module belongs to: app.audit.models → app.audit."""
    parts = module.split(".")
    assert parts[0] == "app" and len(parts) >= 3, f"a table defined outside a folder of app/: {module}"
    return ".".join(parts[:2])


def code_owners() -> dict[str, set[str]]:
    """Table → the packages whose modules define it, from the mapped classes and, for a Table
    that no class maps, the module holding it."""
    from app.db import Base
    from app.tables import metadata

    defined: dict[str, set[str]] = {name: set() for name in metadata.tables}
    for mapper in Base.registry.mappers:
        for table in mapper.tables:
            defined[table.name].add(package_of(mapper.class_.__module__))
    for name, table in metadata.tables.items():
        if defined[name]:
            continue
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("app.") and any(value is table for value in vars(module).values()
                                                      if isinstance(value, Table)):
                defined[name].add(package_of(module_name))
    return defined


def test_every_table_has_one_owner_in_the_code():
    owners = code_owners()
    assert owners
    assert {name: found for name, found in owners.items() if len(found) != 1} == {}


def test_the_architecture_page_names_the_owner_of_every_table():
    expected = {name: sorted(found) for name, found in code_owners().items()}
    listed = page_owners()
    assert {name for name, folders in listed.items() if len(folders) > 1} == set(), "a table listed twice"
    assert sorted(set(listed) - set(expected)) == [], "the page lists tables the models do not define"
    assert sorted(set(expected) - set(listed)) == [], "tables missing from the page's map"
    assert {name: folders for name, folders in listed.items() if folders != expected[name]} == {}


def test_the_architecture_page_lists_exactly_the_import_contracts():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    names = {contract["name"] for contract in contracts}
    rules = set(re.findall(r"^- \*\*(.+?)\*\*", architecture_section(), re.M))
    assert len(names) >= 4
    assert rules == names
