"""The README is the short entry point: its two commands are there, and every relative link it
holds (the documentation pages) points at a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme
    assert "make test" in readme


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links no documentation page"
    assert [link for link in relative if not (ROOT / link).is_file()] == []
