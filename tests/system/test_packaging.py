"""The image installs the package non-editable (`pip install .` in the Dockerfile): every file
the app serves or renders must be inside the wheel, not only in the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVED = ("app/dashboard/templates", "app/dashboard/static", "app/static/docs")


def test_the_wheel_carries_every_template_and_static_file(tmp_path):
    # Built from a copy, as the image's build context is: a build/ folder left in the checkout
    # would otherwise supply files the package data no longer names.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "workers", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = tmp_path.glob("obliviate-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(path.relative_to(ROOT)) for folder in SERVED for path in (ROOT / folder).rglob("*") if path.is_file()}
    assert expected, "no served files found in the source tree"
    assert sorted(expected - packaged) == []
