"""The README's architecture map matches the code: the folder named for each table defines it,
every table is named, and each import rule is an import-linter contract (which
tests/system/test_layers.py runs)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import tomllib
from pathlib import Path

import app

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Architecture\n")
    return text[start:text.index("\n## ", start + 1)]


def _rows(header: str) -> dict[str, list[str]]:
    """First column → the back-quoted names of the second, for the table under `header`."""
    lines = _section().splitlines()
    start = lines.index(header)
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        first, second = (cell.strip() for cell in line.strip("|").split("|"))
        rows[first.strip("`")] = re.findall(r"`([^`]+)`", second)
    return rows


def _defining_folders() -> dict[str, str]:
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if module.name.endswith(".models"):
            importlib.import_module(module.name)
    from app.db import Base

    return {mapper.local_table.name: mapper.class_.__module__ for mapper in Base.registry.mappers}


def test_every_table_is_defined_in_the_folder_the_readme_names():
    owners = _rows("| folder | owns the tables |")
    named = {table: folder for folder, tables in owners.items() for table in tables}
    defined = _defining_folders()
    assert sorted(named) == sorted(defined), "tables missing from or unknown to the README map"
    for table, module in defined.items():
        folder = "/".join(module.split(".")[:-1]) + "/"
        assert named[table] == folder, f"{table} is defined in {module}, the README says {named[table]}"


def test_every_import_rule_of_the_readme_is_a_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {(source, target) for c in config if c["type"] == "forbidden"
                 for source in c["source_modules"] for target in c["forbidden_modules"]}
    for contract in config:
        if contract["type"] == "layers":  # a lower layer never imports a higher one
            layers = contract["layers"]
            forbidden |= {(low, high) for i, high in enumerate(layers) for low in layers[i + 1:]}
    rules = _rows("| layer | never imports |")
    assert rules, "the README's import rules are missing"
    for layer, modules in rules.items():
        for module in modules:
            covered = any((source, module) in forbidden for source in _and_ancestors(layer))
            assert covered, f"no import-linter contract keeps {layer} from importing {module}"


def _and_ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
