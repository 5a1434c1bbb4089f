"""Upload bombs (files whose decoded size is far beyond their size) and the peak memory of
reading one as an upload, measured in a subprocess of its own: Arrow allocates outside
Python's allocator, where tracemalloc does not see it, so the process's peak resident set
(`ru_maxrss`) is compared before and after the read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20

_SCRIPT = """
import json, resource, sys
from app.datasets.formats import UploadSpec, read_checked_table
from app.datasets.limits import UploadLimits
from app.datasets.text import TextUploadSpec, read_text_table
from app.datasets.images import ImageUploadSpec, read_image_upload
from app.errors import ProblemError

kind, path = sys.argv[1], sys.argv[2]
limits = UploadLimits.from_settings()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    if kind == "text":
        rows = read_text_table(path, TextUploadSpec("user_id", "user_id", "text"), limits).num_rows
    elif kind == "image":
        rows = len(read_image_upload(path, ImageUploadSpec("creator", "creator", "file"), secret=b"k" * 32,
                                     limits=limits).images)
    else:
        rows = read_checked_table(path, UploadSpec("user_id", "user_id", "label"), limits)[0].num_rows
    outcome = {"rows": rows}
except ProblemError as exc:
    outcome = {"status": exc.status, "detail": exc.detail}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({**outcome, "peak_growth_bytes": (after - before) * 1024}))
"""


def peak_of_reading(kind: str, path: Path, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    """Read the file as a text ("text"), tabular ("tabular") or image zip ("image") upload in a fresh process; answers
    its outcome (rows, or the problem's status and detail) and the growth of its peak memory."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, kind, str(path)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def key_bomb(lines: int = 300, keys: int = 300) -> bytes:
    """The issue's file: every line has its own `keys` keys besides the two columns (~1.1 MB)."""
    out = []
    for line in range(lines):
        record = {"user_id": f"u{line % 50:03d}", "text": f"note number {line}"}
        record.update({f"k{line}_{key}": key for key in range(keys)})
        out.append(json.dumps(record))
    return ("\n".join(out) + "\n").encode()


def dictionary_bomb(path, *, row_groups: int, rows_per_group: int, value_bytes: int, text: bool) -> None:
    """One long value, dictionary-encoded (one copy per row group) and repeated on every row;
    without statistics, so the footer gives no value length."""
    value = "v" * value_bytes
    schema = pa.schema([("user_id", pa.string()), ("label", pa.int64()), ("text" if text else "feature", pa.string())])
    with pq.ParquetWriter(path, schema, use_dictionary=True, write_statistics=False, compression="zstd") as writer:
        for group in range(row_groups):
            writer.write_table(pa.table({
                "user_id": pa.array([f"u{group}"] * rows_per_group), "label": pa.array([0] * rows_per_group),
                ("text" if text else "feature"): pa.array([value] * rows_per_group),
            }, schema=schema))


def image_zip(path, images: dict[str, bytes], *, stored: bool = False) -> None:
    """A zip of the images (name → bytes) and a manifest naming each, one creator per image."""
    import zipfile

    manifest = "file,creator\n" + "".join(f"{name},artist{i}\n" for i, name in enumerate(images))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.csv", manifest)
        for name, data in images.items():
            archive.writestr(name, data)


def black_png(side: int) -> bytes:
    """A real PNG of side × side black pixels: a few hundred KB that decode to side² bytes."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, format="PNG", optimize=True)
    return out.getvalue()
