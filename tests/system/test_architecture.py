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


CITATION = re.compile(r'docs/([a-z-]+)\.md, (?:"([^"]+)"|([A-Z][^)";]+)\))')
CITING = ("app", "workers", "tests", "bench", "migrations")


def _sources() -> list[Path]:
    return [path for folder in CITING for path in (ROOT / folder).rglob("*.py")] + [ROOT / "pyproject.toml"]


def _headings(page: str) -> list[str]:
    text = (ROOT / "docs" / f"{page}.md").read_text()
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def test_code_cites_sections_that_exist():
    """Comments and contract names point at a page and a heading of docs/ ("The row is the job"):
    renaming a heading must not leave them pointing nowhere."""
    cited, dangling = 0, []
    for path in _sources():
        for page, quoted, bare in CITATION.findall(path.read_text()):
            cited += 1
            section = quoted or bare
            if not any(heading.startswith(section) for heading in _headings(page)):
                dangling.append(f"{path.relative_to(ROOT)}: docs/{page}.md, {section}")
    assert cited >= 15
    assert dangling == []


def test_nothing_cites_a_document_outside_the_repository():
    outside = "DESIGN" + " §"  # spelled in two, so that this file does not cite it either
    assert [str(path.relative_to(ROOT)) for path in _sources() if outside in path.read_text()] == []
