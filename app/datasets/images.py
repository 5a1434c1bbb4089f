"""Image datasets: an upload of images into the stored file of a dataset version (torch-free;
Pillow decodes in the API process).

Two forms of upload:
- Parquet with a column of PNG or JPEG bytes (`image_column`), a subject column and an optional
  label column;
- a zip of image files with a CSV manifest, `manifest.csv` at the archive's root, whose rows name
  each record's file (the `image_column`, usually `file`), subject and optional label. The
  manifest is read and dropped: only the images and the pseudonymised subjects are stored.

The stored file is Parquet with the columns
    record_id (int64, 0..n-1 in upload order, kept by later versions), subject_key (HMAC hex),
    label (int64 class index; 0 for every record without a label column, and no classes),
    image (PNG bytes, re-encoded: mode "L" or "RGB", no metadata).

Everything is checked before a pixel is decoded where it can be: an image's size is read from
its header (Pillow opens lazily), a zip's sizes and paths from its directory, and every read is
bounded again by what the directory declared, so a file that lies about itself is caught while it
is read. Images are re-encoded from their pixels alone: EXIF, PNG text chunks, ICC profiles and
comments, which can name the creator, are not carried over. Messages name records and columns,
never values or the archive's file names.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from PIL import Image, UnidentifiedImageError

from app.config import get_settings
from app.datasets import identifiers
from app.datasets.formats import (
    CSV_UNPARSABLE, PARQUET_MAGIC, check_identifier_columns, decoded, is_text, plain_type,
)
from app.datasets.ingest import BuiltVersion, label_classes, pseudonymise, subject_record_groups, write_version_file
from app.datasets.limits import UploadLimits, check_parquet_footer, open_parquet, read_parquet_bounded
from app.errors import PayloadTooLarge, Unprocessable
from app.pii import find_identifier

IMAGE_COLUMN = "image"
MANIFEST = "manifest.csv"
ZIP_MAGIC = b"PK\x03\x04"
# Decoders an upload may use: PNG and JPEG only, never Pillow's other formats.
FORMATS = ("PNG", "JPEG")
# Files under this size are exempt from the ratio limit: a small blank image compresses far.
RATIO_EXEMPT_BYTES = 64 * 1024
# Largest manifest, in bytes.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_entries: int
    max_uncompressed_bytes: int
    max_ratio: int

    @classmethod
    def from_settings(cls) -> "ImageLimits":
        settings = get_settings()
        return cls(settings.max_image_pixels, settings.max_zip_entries, settings.max_zip_uncompressed_bytes,
                   settings.max_zip_ratio)


@dataclass(frozen=True)
class ImageUploadSpec:
    subject_column: str
    subject_kind: str
    # The Parquet column of image bytes, or the manifest's column of file names.
    image_column: str
    label_column: str | None = None
    identifier_columns: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        label = [self.label_column] if self.label_column else []
        return [self.subject_column, self.image_column, *label, *self.identifier_columns.values()]


@dataclass
class ParsedImages:
    keys: list[str]  # distinct subject keys, sorted
    key_index: np.ndarray  # per row: position of its subject key in `keys`
    labels: pa.Array | None  # None without a label column
    images: list[bytes]  # re-encoded PNG, one per row
    size: list[int]  # [height, width, channels] of every image
    links: list[identifiers.Link] = field(default_factory=list)


def read_image_upload(
    path: str | os.PathLike, spec: ImageUploadSpec, *, secret: bytes,
    limits: UploadLimits | None = None, image_limits: ImageLimits | None = None,
) -> ParsedImages:
    limits = limits or UploadLimits.from_settings()
    image_limits = image_limits or ImageLimits.from_settings()
    _check_names(spec)
    if os.path.getsize(path) == 0:
        raise Unprocessable("The file is empty.")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == PARQUET_MAGIC:
        table = _read_parquet(path, spec, limits)
        blobs: Any = decoded(table.column(spec.image_column))
        if not (pa.types.is_binary(blobs.type) or pa.types.is_large_binary(blobs.type)):
            raise Unprocessable(f"The image column '{spec.image_column}' must hold image bytes (binary).")
        images = _reencode_all((blobs[i].as_py() for i in range(len(blobs))), table.num_rows, image_limits, limits)
    elif head == ZIP_MAGIC:
        with _open_zip(path) as archive:
            members = _check_archive(archive, image_limits)
            table = _read_manifest(archive, members, spec, limits)
            images = _reencode_all(_members_of(archive, members, table.column(spec.image_column), image_limits),
                                   table.num_rows, image_limits, limits)
    else:
        raise Unprocessable("An image dataset is a Parquet file with a column of image bytes, or a zip of images with "
                            f"a {MANIFEST}.")
    encoded, size = images
    keys, key_index = pseudonymise(decoded(table.column(spec.subject_column)), spec.subject_kind, secret)
    labels = decoded(table.column(spec.label_column)) if spec.label_column else None
    links = identifiers.links(table, spec.identifier_columns, spec.subject_kind, keys, key_index, secret)
    return ParsedImages(keys=keys, key_index=key_index, labels=labels, images=encoded, size=size, links=links)


def _check_names(spec: ImageUploadSpec) -> None:
    named = [spec.subject_column, spec.image_column, *([spec.label_column] if spec.label_column else [])]
    if any(find_identifier(name) for name in named):
        raise Unprocessable("A column named in the form looks like an e-mail address or phone number.")
    if len(set(named)) != len(named):
        raise Unprocessable("subject_column, image_column and label_column must be different columns.")


def _require(names: list[str], spec: ImageUploadSpec) -> None:
    roles = [("subject_column", spec.subject_column), ("image_column", spec.image_column)]
    if spec.label_column:
        roles.append(("label_column", spec.label_column))
    for role, column in roles:
        if column not in names:
            raise Unprocessable(f"The {role} '{column}' is not a column of the file.")
    check_identifier_columns(names, spec.identifier_columns, spec.subject_kind, [column for _, column in roles])


def _check_values(table: pa.Table, spec: ImageUploadSpec) -> None:
    if table.num_rows == 0:
        raise Unprocessable("The file has no rows.")
    for column in (spec.subject_column, spec.image_column, *([spec.label_column] if spec.label_column else [])):
        if table.column(column).null_count:
            raise Unprocessable(f"Column '{column}' has empty (null) values.")
    subject_type = plain_type(table.column(spec.subject_column).type)
    if not (is_text(subject_type) or pa.types.is_integer(subject_type)):
        raise Unprocessable(f"The subject column '{spec.subject_column}' must hold text or integers.")
    if spec.label_column:
        label_type = plain_type(table.column(spec.label_column).type)
        if not (pa.types.is_integer(label_type) or pa.types.is_boolean(label_type) or is_text(label_type)):
            raise Unprocessable(f"The label column '{spec.label_column}' must hold integers or text class names.")


# Parquet.


def _read_parquet(path, spec: ImageUploadSpec, limits: UploadLimits) -> pa.Table:
    parquet, names = open_parquet(path)
    _require(names, spec)
    check_parquet_footer(parquet.metadata, spec.columns, 0, limits)
    try:
        table = read_parquet_bounded(parquet, spec.columns, 0, limits)
    except (pa.ArrowException, OSError):
        raise Unprocessable("The Parquet file could not be read; it may be truncated or damaged.") from None
    _check_values(table, spec)
    return table


# Zip archives.


def _open_zip(path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise Unprocessable("The file starts like a zip archive but is not a valid one.") from None


def _check_archive(archive: zipfile.ZipFile, limits: ImageLimits) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by name, after checking its directory: the number of entries, the
    total and per-file expansion (zip bombs), and every path (one that climbs out of the
    archive, is absolute, or is a link is refused, whether or not the manifest names it)."""
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise PayloadTooLarge(f"The archive has {len(entries)} entries; at most {limits.max_entries} are accepted "
                              "(OBLIVIATE_MAX_ZIP_ENTRIES).")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for number, info in enumerate(entries, start=1):
        _check_path(info, number)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise Unprocessable(f"Entry {number} of the archive is encrypted.")
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise PayloadTooLarge(f"The archive's files expand to more than {limits.max_uncompressed_bytes} bytes "
                                  "(OBLIVIATE_MAX_ZIP_UNCOMPRESSED_BYTES).")
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > limits.max_ratio * max(1, info.compress_size):
            raise PayloadTooLarge(f"Entry {number} of the archive expands more than {limits.max_ratio} times "
                                  "(OBLIVIATE_MAX_ZIP_RATIO): a zip bomb.")
        if info.filename in members:
            raise Unprocessable(f"Entry {number} of the archive repeats an earlier entry's name.")
        members[info.filename] = info
    if MANIFEST not in members:
        raise Unprocessable(f"The archive has no {MANIFEST} at its root.")
    return members


def _check_path(info: zipfile.ZipInfo, number: int) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts
            or "\x00" in name):
        raise Unprocessable(f"Entry {number} of the archive has a path that leaves the archive (absolute or '..').")
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise Unprocessable(f"Entry {number} of the archive is a link or special file; "
                            "only regular files are accepted.")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    """The member's bytes, reading at most one byte past its declared size: a member that
    expands beyond what the directory says is refused while it is read."""
    try:
        with archive.open(info) as handle:
            data = handle.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        raise Unprocessable(f"{what} could not be extracted from the archive; it may be damaged.") from None
    if len(data) > info.file_size:
        raise PayloadTooLarge(f"{what} expands beyond the size the archive declares: a zip bomb.")
    return data


def _read_manifest(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], spec: ImageUploadSpec,
                   limits: UploadLimits) -> pa.Table:
    info = members[MANIFEST]
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PayloadTooLarge(f"The {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes.")
    data = _read_member(archive, info, f"The {MANIFEST}")
    try:
        reader = pacsv.open_csv(io.BytesIO(data))
        names = reader.schema.names
        reader.close()
    except (pa.ArrowException, OSError):
        raise Unprocessable(f"The {MANIFEST} is not CSV in UTF-8.") from None
    for position, name in enumerate(names, start=1):
        if find_identifier(name):
            raise Unprocessable(f"The name of the manifest's column {position} looks like an e-mail address "
                                "or phone number.")
    _require(names, spec)
    text_columns = [spec.subject_column, spec.image_column, *spec.identifier_columns.values()]
    try:
        table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
            column_types={column: pa.string() for column in text_columns}, include_columns=spec.columns,
            strings_can_be_null=False, quoted_strings_can_be_null=False,
        ))
    except (pa.ArrowException, OSError):
        raise Unprocessable(CSV_UNPARSABLE) from None
    limits.check_rows(table.num_rows)
    _check_values(table, spec)
    return table


def _members_of(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], files: pa.ChunkedArray,
                limits: ImageLimits):
    """Each manifest row's image bytes, in manifest order."""
    total = 0
    for record, name in enumerate(decoded(files).to_pylist(), start=1):
        name = name.strip()
        info = members.get(name[2:] if name.startswith("./") else name)
        if info is None or info.filename == MANIFEST:
            raise Unprocessable(f"Record {record} (counting from 1) names a file that is not in the archive.")
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise PayloadTooLarge(f"The manifest's files expand to more than {limits.max_uncompressed_bytes} bytes "
                                  "(OBLIVIATE_MAX_ZIP_UNCOMPRESSED_BYTES).")
        yield _read_member(archive, info, f"The file of record {record}")


# Decoding and re-encoding.


def _reencode_all(blobs, rows: int, limits: ImageLimits, upload: UploadLimits) -> tuple[list[bytes], list[int]]:
    """Every image re-encoded as PNG, after checking that all have one size and that their
    decoded pixels fit the upload's memory budget."""
    upload.check_rows(rows)
    encoded: list[bytes] = []
    size: list[int] | None = None
    for record, blob in enumerate(blobs, start=1):
        png, this = reencode(blob, f"Record {record} (counting from 1)", limits.max_pixels)
        if size is None:
            size = this
            upload.check_memory(rows, 0, rows * this[0] * this[1] * this[2])
        elif this != size:
            raise Unprocessable(
                f"Record {record} (counting from 1) is {this[0]}×{this[1]} with {this[2]} channel(s); the first image "
                f"is {size[0]}×{size[1]} with {size[2]}. Every image of a dataset has one size: resize them first."
            )
        encoded.append(png)
    if size is None:
        raise Unprocessable("The file has no rows.")
    return encoded, size


def reencode(data: bytes, where: str, max_pixels: int) -> tuple[bytes, list[int]]:
    """The image as PNG bytes holding only its pixels, and [height, width, channels].

    The size comes from the header first (Image.open decodes nothing), so an image over
    `max_pixels` is refused before its pixels are expanded; Pillow's own bomb check is set to the
    same limit. Grey images (with or without alpha, any bit depth) become "L", others "RGB";
    alpha is dropped. Messages start with `where` ("Record 3 (counting from 1)")."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow warns between the limit and twice it; here that is a refusal like above it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise Unprocessable(f"{where} has {width}×{height} pixels; at most {max_pixels} are accepted "
                                    "(OBLIVIATE_MAX_IMAGE_PIXELS).")
            image.load()
            mode = "L" if image.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F") else "RGB"
            pixels = image.convert(mode).tobytes()
    except Unprocessable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Unprocessable(f"{where} has more pixels than OBLIVIATE_MAX_IMAGE_PIXELS allows.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError, MemoryError):
        raise Unprocessable(f"{where} is not a PNG or JPEG image that can be decoded.") from None
    if width < 1 or height < 1:
        raise Unprocessable(f"{where} has no pixels.")
    # A new image from the pixels alone: nothing of the upload's metadata can follow it.
    clean = Image.frombytes(mode, (width, height), pixels)
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=False)
    return out.getvalue(), [height, width, 1 if mode == "L" else 3]


def build_image_version(parsed: ParsedImages, out_path: str | os.PathLike, *, tombstoned: set[str],
                        classes: list[Any] | None = None) -> BuiltVersion:
    """Write the version file without the rows of tombstoned subjects; labels encoded against
    `classes` (an existing dataset's) or the sorted distinct labels, all 0 without labels."""
    dropped = np.array([key in tombstoned for key in parsed.keys], dtype=bool)
    keep = ~dropped[parsed.key_index]
    rows = int(keep.sum())
    if rows == 0:
        raise Unprocessable("Every record belongs to an erased subject; nothing is left to store.")
    mask = pa.array(keep)
    if parsed.labels is None:
        classes, label_index = [], pa.array(np.zeros(rows, dtype=np.int64))
    else:
        labels = parsed.labels.filter(mask)
        if pa.types.is_boolean(labels.type):
            labels = labels.cast(pa.int64())
        classes = label_classes(labels, classes)
        label_index = pc.index_in(labels, value_set=pa.array(classes, type=labels.type)).cast(pa.int64())
    key_index = parsed.key_index[keep]
    images = pa.array([image for image, kept in zip(parsed.images, keep.tolist(), strict=True) if kept], pa.binary())
    table = pa.table(
        [
            pa.array(np.arange(rows, dtype=np.int64)),
            pa.array(parsed.keys, pa.string()).take(pa.array(key_index)),
            label_index,
            images,
        ],
        names=["record_id", "subject_key", "label", IMAGE_COLUMN],
    )
    sha = write_version_file(table, out_path)
    groups = subject_record_groups(parsed.keys, key_index, np.arange(rows, dtype=np.int64))
    return BuiltVersion(
        path=Path(out_path), sha256=sha, rows=rows, subjects=len(groups), classes=classes,
        filtered_rows=len(keep) - rows, filtered_subjects=int(dropped.sum()), feature_columns=[],
        subject_records=groups,
    )
