"""Peak memory of reading upload bombs: JSON Lines files of many distinct keys (issue 20's file and
a 4.6 MB one) and Parquet files of one long value repeated through dictionary pages, each read as
an upload in a fresh process (tests/security/memory_probe.py). Prints a table and writes
bench/results/upload_bombs.json.

    .venv/bin/python bench/upload_bombs.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.security.memory_probe import MiB, dictionary_bomb, key_bomb, peak_of_reading  # noqa: E402

# Each case: name, kind of upload, how to write the file, settings for the reading process.
LIFTED_KEYS = {"OBLIVIATE_MAX_JSONL_KEYS": "100000000"}
SMALL_BUDGET = {"OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES": str(64 * MiB)}
CASES = [
    ("jsonl 300 lines x 300 keys, default bounds", "text", lambda p: p.write_bytes(key_bomb()), {}),
    ("jsonl 300 lines x 300 keys, key bound lifted", "text", lambda p: p.write_bytes(key_bomb()), LIFTED_KEYS),
    ("jsonl 1000 lines x 300 keys, key bound lifted", "text", lambda p: p.write_bytes(key_bomb(1000)), LIFTED_KEYS),
    ("parquet text, 40k x 16 KiB dictionary value", "text",
     lambda p: dictionary_bomb(p, row_groups=40, rows_per_group=1000, value_bytes=16384, text=True), SMALL_BUDGET),
    ("parquet tabular, 40k x 16 KiB dictionary value", "tabular",
     lambda p: dictionary_bomb(p, row_groups=40, rows_per_group=1000, value_bytes=16384, text=False), SMALL_BUDGET),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, kind, write, env in CASES:
            path = Path(folder) / "upload.bin"
            write(path)
            started = time.monotonic()
            outcome = peak_of_reading(kind, path, env)
            rows.append({"case": name, "file_bytes": path.stat().st_size, "seconds": round(time.monotonic() - started, 2),
                         "outcome": outcome.get("status", f"{outcome.get('rows')} rows"),
                         "peak_growth_mib": round(outcome["peak_growth_bytes"] / MiB, 1)})
    print("| case | file bytes | outcome | peak growth (MiB) | seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['file_bytes']:,} | {row['outcome']} | {row['peak_growth_mib']} | {row['seconds']} |")
    out = ROOT / "bench" / "results" / "upload_bombs.json"
    out.write_text(json.dumps({"cases": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
