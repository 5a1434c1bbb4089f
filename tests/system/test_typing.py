"""The jobs' typed backbone type-checks strictly ([tool.mypy] in pyproject.toml): the app's
unlearning package and the job's ledger in it, the certificates' service, the sequencer, the
worker's unlearning engine and its verification checks, and the step services and plans of
training, reference refill and webhook delivery."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRICT = ["app/unlearning", "app/certificates/service.py", "workers/unlearning.py", "workers/engine/unlearning",
          "workers/engine/verification",
          # The step services of the other jobs and of webhook delivery, and the plans they hand over.
          "app/training", "app/webhooks/types.py", "app/requests/webhook_delivery.py", "workers/references.py"]


def test_the_unlearning_backbone_passes_mypy_strict():
    cache = Path(tempfile.gettempdir()) / "obliviate-mypy"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *STRICT], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success" in result.stdout
