"""Peak memory of reading upload bombs: JSON Lines files of many distinct keys (issue 20's file and
a 4.6 MB one), Parquet files of one long value repeated through dictionary pages, and image
uploads (decompression bombs, zip bombs, and an ordinary zip of small works), each read as
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

from tests.security.memory_probe import (  # noqa: E402
    MiB, black_png, dictionary_bomb, image_zip, key_bomb, peak_of_reading,
)

# Each case: name, kind of upload, how to write the file, settings for the reading process.
LIFTED_KEYS = {"OBLIVIATE_MAX_JSONL_KEYS": "100000000"}
SMALL_BUDGET = {"OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES": str(64 * MiB)}
PIXELS_LIFTED = {"OBLIVIATE_MAX_IMAGE_PIXELS": str(10**9)}
RATIO_LIFTED = {"OBLIVIATE_MAX_ZIP_RATIO": str(10**9), "OBLIVIATE_MAX_ZIP_UNCOMPRESSED_BYTES": str(64 * MiB)}


def _forged_header_png() -> bytes:
    """A 1×1 PNG whose header claims 60000 × 60000 pixels."""
    import struct
    import zlib

    png = bytearray(black_png(1))
    header = struct.pack(">II", 60_000, 60_000) + bytes(png[24:29])
    png[16:29] = header
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(png)


def _small_works(count: int) -> dict[str, bytes]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    works = {}
    for index in range(count):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(out, format="PNG")
        works[f"works/{index:05d}.png"] = out.getvalue()
    return works

CASES = [
    ("jsonl 300 lines x 300 keys, default bounds", "text", lambda p: p.write_bytes(key_bomb()), {}),
    ("jsonl 300 lines x 300 keys, key bound lifted", "text", lambda p: p.write_bytes(key_bomb()), LIFTED_KEYS),
    ("jsonl 1000 lines x 300 keys, key bound lifted", "text", lambda p: p.write_bytes(key_bomb(1000)), LIFTED_KEYS),
    ("parquet text, 40k x 16 KiB dictionary value", "text",
     lambda p: dictionary_bomb(p, row_groups=40, rows_per_group=1000, value_bytes=16384, text=True), SMALL_BUDGET),
    ("parquet tabular, 40k x 16 KiB dictionary value", "tabular",
     lambda p: dictionary_bomb(p, row_groups=40, rows_per_group=1000, value_bytes=16384, text=False), SMALL_BUDGET),
    ("zip, png header claiming 60000 x 60000", "image", lambda p: image_zip(p, {"a.png": _forged_header_png()}), {}),
    ("stored zip, real 12000 x 12000 black png, default pixel limit", "image",
     lambda p: image_zip(p, {"a.png": black_png(12_000)}, stored=True), {}),
    ("stored zip, real 12000 x 12000 black png, pixel limit lifted", "image",
     lambda p: image_zip(p, {"a.png": black_png(12_000)}, stored=True), PIXELS_LIFTED),
    ("zip, 1 GiB of zeros in one entry", "image",
     lambda p: image_zip(p, {"a.png": black_png(16), "zeros.bin": bytes(2**30)}), {}),
    ("zip, 1 GiB of zeros, ratio bound lifted", "image",
     lambda p: image_zip(p, {"a.png": black_png(16), "zeros.bin": bytes(2**30)}), RATIO_LIFTED),
    ("zip of 5000 works of 16 x 16, a normal upload", "image", lambda p: image_zip(p, _small_works(5000)), {}),
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
