"""Importing Hugging Face bases: time and peak memory of checking and normalising save_pretrained
archives of GPT-2 configurations up to about 86 M parameters (one file and sharded, tar and gzip),
each read in a fresh process (app/models/hf_archive.py, as the import route calls it): the
process's resident set once its modules are loaded, and its peak over the whole run. The
archive streams from disk, so the peak should not grow with the archive's size. Prints a table and writes
bench/results/hf_import.json.

    PYTHONPATH=$PWD .venv/bin/python bench/hf_import.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.hf_models import save_tiny_gpt2  # noqa: E402

MiB = 2**20
# (label, GPT-2 settings, shard size for save_pretrained or None for one file)
CASES = [
    ("gpt2 2x64 (0.2 M)", {"n_layer": 2, "n_embd": 64, "n_head": 2}, None),
    ("gpt2 6x384 (11 M)", {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 512}, None),
    ("gpt2 12x768 (86 M)", {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}, None),
    ("gpt2 12x768 (86 M), 100 MB shards", {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}, "100MB"),
]

# VmHWM is the peak of this process's own memory map (ru_maxrss would carry the forking
# parent's peak across exec).
_SCRIPT = """
import json, sys, time
from pathlib import Path
from app.models import hf_archive
from app.errors import ProblemError


def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) * 1024


archive, workdir = sys.argv[1], Path(sys.argv[2])
resident = status("VmRSS")
started = time.monotonic()
with open(archive, "rb") as source:
    try:
        checked = hf_archive.read(source, workdir, 8 * 1024**3)
        outcome = {"parameters": checked.parameters, "stored_bytes": checked.tar_path.stat().st_size}
    except ProblemError as exc:
        outcome = {"status": exc.status, "detail": exc.detail}
seconds = time.monotonic() - started
print(json.dumps({**outcome, "seconds": seconds, "resident_before_bytes": resident, "peak_bytes": status("VmHWM")}))
"""


def _pack(folder: Path, path: Path, compressed: bool) -> None:
    with tarfile.open(path, "w:gz", compresslevel=1) if compressed else tarfile.open(path, "w") as out:
        out.add(folder, arcname=".")


def _measure(archive: Path, scratch: Path) -> dict:
    workdir = scratch / f"work-{time.monotonic_ns()}"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OBLIVIATE_MAX_MODEL_PARAMETERS": str(10**9)}
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(archive), str(workdir)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1200, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import transformers

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        for label, settings, shard in CASES:
            saved = save_tiny_gpt2(scratch / "saved", vocab_size=512, **settings)
            if shard:
                model = transformers.AutoModelForCausalLM.from_pretrained(saved)
                (saved / "model.safetensors").unlink()
                model.save_pretrained(saved, max_shard_size=shard)
            for compressed in (False, True):
                archive = scratch / ("base.tgz" if compressed else "base.tar")
                _pack(saved, archive, compressed)
                outcome = _measure(archive, scratch)
                rows.append({
                    "case": label, "packing": "tgz" if compressed else "tar", "archive_bytes": archive.stat().st_size,
                    "parameters": outcome.get("parameters"), "seconds": round(outcome["seconds"], 2),
                    "resident_before_mib": round(outcome["resident_before_bytes"] / MiB, 1),
                    "peak_mib": round(outcome["peak_bytes"] / MiB, 1),
                    "outcome": outcome.get("status", "stored"),
                })
                archive.unlink()
            for path in saved.iterdir():
                path.unlink()
            saved.rmdir()
    print("| case | packing | archive (MB) | parameters | outcome | seconds | resident before (MiB) | peak (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['packing']} | {row['archive_bytes'] / 1e6:.1f} | {row['parameters']:,} | "
              f"{row['outcome']} | {row['seconds']} | {row['resident_before_mib']} | {row['peak_mib']} |")
    out = ROOT / "bench" / "results" / "hf_import.json"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    out.write_text(json.dumps({"machine": machine, "cases": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
