"""The unlearning job's typed backbone type-checks strictly ([tool.mypy] in pyproject.toml):
the app's unlearning package, the sequencer, the worker's unlearning engine and its
verification checks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRICT = ["app/unlearning", "workers/unlearning.py", "workers/engine/unlearning", "workers/engine/verification"]


def test_the_unlearning_backbone_passes_mypy_strict():
    cache = Path(tempfile.gettempdir()) / "obliviate-mypy"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *STRICT], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success" in result.stdout
