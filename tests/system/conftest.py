"""Fixtures of the system checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A copy of what the image's build context holds (pyproject, README and the packages), so a
    build/ folder left in the checkout cannot supply files the package no longer names."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "workers", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    return source
