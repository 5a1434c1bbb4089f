"""The image installs the package non-editable (`pip install .` in the Dockerfile): every file
the app serves or renders must be inside the wheel, not only in the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVED = ("app/dashboard/templates", "app/dashboard/static", "app/static/docs")


def test_the_wheel_carries_every_template_and_static_file(tmp_path, source_tree):
    # Built from a copy, as the image's build context is (conftest.source_tree).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(source_tree)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = tmp_path.glob("obliviate-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(path.relative_to(ROOT)) for folder in SERVED for path in (ROOT / folder).rglob("*") if path.is_file()}
    assert expected, "no served files found in the source tree"
    assert sorted(expected - packaged) == []
