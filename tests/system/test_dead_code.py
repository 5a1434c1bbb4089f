"""No dead code in app and workers: vulture, with the settings of [tool.vulture] in pyproject.toml
and the names in tests/system/vulture_whitelist.py (each there with the reason it is live),
reports nothing. Code that only tests call is dead too: tests are not scanned."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHITELIST = ROOT / "tests" / "system" / "vulture_whitelist.py"


def vulture(*paths: str) -> subprocess.CompletedProcess:
    # Run from the root so that vulture reads [tool.vulture]; paths given here replace its paths.
    return subprocess.run(
        [sys.executable, "-m", "vulture", *paths], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_vulture_finds_no_dead_code():
    result = vulture()
    assert result.returncode == 0 and result.stdout == "", (
        "dead code (remove it, or add it to tests/system/vulture_whitelist.py with the reason it is live):\n"
        + result.stdout + result.stderr
    )


def test_the_settings_still_find_a_dead_function(tmp_path):
    """The decorators vulture is told to ignore do not hide a function nobody calls."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from fastapi import APIRouter\n\nrouter = APIRouter()\n\n\n"
        "@router.get('/used')\ndef a_route():\n    return 1\n\n\n"
        "def never_called():\n    return 2\n"
    )
    result = vulture(str(planted))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "never_called" in result.stdout and "a_route" not in result.stdout


def test_every_whitelisted_name_is_still_in_the_code():
    """A name the code no longer has is a stale line: the whitelist must not grow past the code."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["vulture"]
    sources = []
    for entry in settings["paths"]:
        path = ROOT / entry
        if path == WHITELIST:
            continue
        sources += [path] if path.is_file() else sorted(path.rglob("*.py"))
    code = "\n".join(source.read_text() for source in sources)
    names = set()
    for node in ast.walk(ast.parse(WHITELIST.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and node.id != "_":
            names.add(node.id)
    assert names
    stale = sorted(name for name in names if not re.search(rf"\b{re.escape(name)}\b", code))
    assert stale == [], f"no longer in the code, remove from {WHITELIST.name}: {stale}"
