"""Each import rule of the architecture map (docs/architecture.md, "Layers and packages") is an
import-linter contract (which tests/system/test_layers.py runs); tests/system/test_architecture_map.py
checks its tables."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("\n## Layers and packages\n")
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


def test_every_import_rule_of_the_architecture_page_is_a_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {(source, target) for c in config if c["type"] == "forbidden"
                 for source in c["source_modules"] for target in c["forbidden_modules"]}
    for contract in config:
        if contract["type"] == "layers":  # a lower layer never imports a higher one
            layers = contract["layers"]
            forbidden |= {(low, high) for i, high in enumerate(layers) for low in layers[i + 1:]}
    rules = _rows("| layer | never imports |")
    assert rules, "the architecture page's import rules are missing"
    for layer, modules in rules.items():
        for module in modules:
            covered = any((source, module) in forbidden for source in _and_ancestors(layer))
            assert covered, f"no import-linter contract keeps {layer} from importing {module}"


def _and_ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
