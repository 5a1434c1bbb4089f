"""The layer rules: app never imports workers nor torch, workers run no SQL of their own, no
import cycles (pyproject.toml [tool.importlinter], checked by lint-imports), and an API process
that served every route, predictions and a Hugging Face import included, has loaded neither
`workers` nor `torch` (nor transformers and its kin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_api_process_that_served_every_route_loaded_neither_workers_nor_torch(database_url, inference_worker, tmp_path):
    from tests.dataset_files import csv_bytes, digits_table
    from tests.hf_models import pack, save_tiny_gpt2
    from tests.objects import logistic_weights

    (tmp_path / "digits.csv").write_bytes(csv_bytes(digits_table(subjects=50)))
    (tmp_path / "weights.safetensors").write_bytes(logistic_weights())
    (tmp_path / "base.tar").write_bytes(pack(save_tiny_gpt2(tmp_path / "base")))
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "system" / "drive_api.py"), str(tmp_path)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    statuses = report["statuses"]
    # The routes that would need the workers' code did their real work.
    assert statuses["predict"] == 200, report["prediction"]
    assert len(report["prediction"]["probabilities"]) == 3
    assert statuses["weights"] == 200 and statuses["import"] == 201 and statuses["train"] == 202
    assert statuses["import-base"] == 201
    assert set(report["routes"]) <= set(statuses) and len(report["routes"]) > 50
    assert not [label for label, status in statuses.items() if status >= 500], statuses
    assert report["loaded"] == []
