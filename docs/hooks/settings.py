"""MkDocs hook: the settings table of docs/settings.md, rendered from app/config.py at build time.

The page holds a marker where the table goes; the rows come from `Settings.model_fields` (the
environment variable, type with its bounds, default and description), so the page cannot drift
from the code. tests/system/test_settings_doc.py checks that every setting has a description.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- settings-table -->"
# annotated_types constraint → the symbol the table shows, e.g. Ge(0) → "≥ 0".
BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _type(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None)
    if name and not getattr(annotation, "__args__", None):
        return name
    return str(annotation).replace("typing.", "")


def _bounds(metadata: list[Any]) -> list[str]:
    found = []
    for constraint in metadata:
        for attribute, symbol in BOUNDS.items():
            value = getattr(constraint, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}")
    return found


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(environment variable, type, default, description) of every setting, in declaration order."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from app.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = []
    for name, field in Settings.model_fields.items():
        bounds = _bounds(field.metadata)
        kind = _type(field.annotation) + (f" ({', '.join(bounds)})" if bounds else "")
        rows.append((f"{prefix}{name}".upper(), kind, _default(field.default), field.description or ""))
    return rows


def settings_table() -> str:
    lines = ["| environment variable | type | default | description |", "| --- | --- | --- | --- |"]
    for variable, kind, default, description in settings_rows():
        lines.append(f"| `{variable}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, settings_table())
