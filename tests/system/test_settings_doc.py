"""The settings page (docs/settings.md) is generated from app/config.py by docs/hooks/settings.py:
every setting must carry a description, and the rendered table must hold a row for each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def load_hook():
    spec = importlib.util.spec_from_file_location("settings_hook", ROOT / "docs" / "hooks" / "settings.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_every_setting_has_a_description():
    undescribed = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert undescribed == []


def test_the_page_renders_a_row_for_every_setting():
    hook = load_hook()
    page = (ROOT / "docs" / "settings.md").read_text()
    assert hook.MARKER in page, "docs/settings.md has lost the marker the table replaces"
    rendered = hook.on_page_markdown(page, page=None)
    rows = [line for line in rendered.splitlines() if line.startswith("| `OBLIVIATE_")]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        (row,) = [row for row in rows if row.startswith(f"| `OBLIVIATE_{name.upper()}` |")]
        assert field.description.split("|")[0].strip() in row


def test_bounds_and_defaults_reach_the_table():
    rows = {variable: (kind, default) for variable, kind, default, _ in load_hook().settings_rows()}
    assert rows["OBLIVIATE_PRINCIPAL_CACHE_SECONDS"] == ("float (≥ 0, ≤ 5)", "`5.0`")
    assert rows["OBLIVIATE_MAX_MIA_AUC"][1] == "unset"
    assert rows["OBLIVIATE_SECRET_KEY"][1] == "empty"
    assert rows["OBLIVIATE_REHEARSAL"][1] == "`true`"
