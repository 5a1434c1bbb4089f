"""Image datasets for tests: small images per creator, written as a Parquet file of image bytes
or as a zip of image files with its manifest.csv (docs/image-models.md)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def creator_id(index: int) -> str:
    return f"artist{index:02d}@example.org"


def image_png(pixels: np.ndarray, **save) -> bytes:
    """PNG bytes of a uint8 array (height, width) or (height, width, 3)."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", **save)
    return out.getvalue()


def creator_works(*, creators: int = 4, per_creator: int = 3, size: int = 16, channels: int = 1,
                  seed: int = 0) -> list[dict]:
    """Records {"creator", "label", "pixels", "png"}: each creator's works share a mark (a bright
    square in the creator's own place) over noise; labels cycle through three styles."""
    rng = np.random.default_rng(seed)
    records = []
    for creator in range(creators):
        for work in range(per_creator):
            shape = (size, size) if channels == 1 else (size, size, channels)
            pixels = rng.integers(0, 64, shape, dtype=np.uint8)
            row, column = divmod(creator % 4, 2)
            half = size // 2
            pixels[row * half:row * half + 3, column * half:column * half + 3] = 255
            records.append({"creator": creator_id(creator), "label": ["ink", "oil", "pencil"][work % 3],
                            "pixels": pixels, "png": image_png(pixels)})
    return records


def images_parquet(records: list[dict], *, image_column: str = "image", with_labels: bool = True) -> bytes:
    columns = {"creator": pa.array([r["creator"] for r in records], pa.string()),
               image_column: pa.array([r["png"] for r in records], pa.binary())}
    if with_labels:
        columns["style"] = pa.array([r["label"] for r in records], pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def images_zip(records: list[dict], *, with_labels: bool = True, manifest: str | None = None,
               extra: dict[str, bytes] | None = None, names: list[str] | None = None) -> bytes:
    """A zip of works/NNN.png and manifest.csv (file, creator[, style]); `manifest` replaces the
    written manifest, `names` the files' names in it, `extra` adds entries."""
    names = names or [f"works/{i:03d}.png" for i in range(len(records))]
    if manifest is None:
        header = "file,creator,style" if with_labels else "file,creator"
        lines = [f"{name},{r['creator']}" + (f",{r['label']}" if with_labels else "")
                 for name, r in zip(names, records, strict=True)]
        manifest = "\n".join([header, *lines]) + "\n"
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.csv", manifest)
        for index, record in enumerate(records):
            archive.writestr(f"works/{index:03d}.png", record["png"])
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return sink.getvalue()


def upload_images(client, headers, content: bytes, *, name: str = "art", **fields):
    """POST /v1/datasets with an image upload (a zip and its `file` column by default)."""
    form = {"name": name, "subject_column": "creator", "subject_kind": "creator", "image_column": "file",
            "label_column": "style", **fields}
    return client.post(
        "/v1/datasets", data={k: v for k, v in form.items() if v is not None},
        files={"file": ("images.bin", content, "application/octet-stream")}, headers=headers,
    )
