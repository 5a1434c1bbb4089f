"""Image datasets: a Parquet file of image bytes or a zip of images with its manifest, checked
before decoding, stored re-encoded without metadata, and erased like every dataset."""

from __future__ import annotations

import io
import stat
import struct
import uuid
import zipfile
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile, PngImagePlugin
from sqlalchemy import func, select

from app.artifacts.store import get_store
from app.datasets import service as dataset_service
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords, Tombstone
from app.db import session_scope, utcnow
from app.pseudonym import subject_key
from tests.dataset_files import artifact_files, csv_bytes, digits_table, upload
from tests.image_files import creator_id, creator_works, image_png, images_parquet, images_zip, upload_images


def counts() -> tuple[int, int, int]:
    with session_scope() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Dataset, DatasetVersion, SubjectRecords))


def stored_table(sha: str) -> pa.Table:
    return pq.read_table(io.BytesIO(get_store().get_bytes(sha)))


def pixels_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.parametrize("form", ["zip", "parquet"])
def test_images_are_stored_with_record_ids_creator_keys_and_labels(client, writer, form):
    records = creator_works(creators=4, per_creator=3)
    if form == "zip":
        r = upload_images(client, writer, images_zip(records))
    else:
        r = upload_images(client, writer, images_parquet(records), image_column="image")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rows"], body["subjects"], body["image_size"], body["columns"]) == (12, 4, [16, 16, 1], [])
    assert body["classes"] == ["ink", "oil", "pencil"] and body["label_column"] == "style"
    raw = get_store().get_bytes(body["sha256"])
    stored = stored_table(body["sha256"])
    assert stored.column_names == ["record_id", "subject_key", "label", "image"]
    assert stored.schema.field("image").type == pa.binary()
    assert stored.column("record_id").to_pylist() == list(range(12))
    assert stored.column("subject_key").to_pylist() == [subject_key("creator", r["creator"]) for r in records]
    assert stored.column("label").to_pylist() == [["ink", "oil", "pencil"].index(r["label"]) for r in records]
    # The pixels survive (PNG is lossless); the identifiers and the manifest do not.
    for png, record in zip(stored.column("image").to_pylist(), records, strict=True):
        assert Image.open(io.BytesIO(png)).format == "PNG"
        assert np.array_equal(pixels_of(png), record["pixels"])
    assert b"artist00" not in raw and b"manifest" not in raw and b"works/" not in raw
    detail = client.get(f"/v1/datasets/{body['dataset_id']}", headers=writer).json()
    assert (detail["image_column"], detail["image_size"]) == (body["image_column"], [16, 16, 1])


def test_without_labels_every_label_is_zero_and_rgb_keeps_three_channels(client, writer):
    records = creator_works(creators=2, per_creator=2, size=8, channels=3)
    r = upload_images(client, writer, images_zip(records, with_labels=False), label_column=None)
    assert r.status_code == 201, r.text
    assert (r.json()["classes"], r.json()["label_column"], r.json()["image_size"]) == ([], None, [8, 8, 3])
    stored = stored_table(r.json()["sha256"])
    assert stored.column("label").to_pylist() == [0, 0, 0, 0]
    assert Image.open(io.BytesIO(stored.column("image")[0].as_py())).mode == "RGB"


def test_metadata_that_could_name_the_creator_is_not_stored(client, writer):
    records = creator_works(creators=2, per_creator=1)
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Ada Lovelace")
    text.add_itxt("Comment", "drawn by Ada Lovelace", zip=True)
    records[0]["png"] = image_png(records[0]["pixels"], pnginfo=text)
    exif = Image.Exif()
    exif[0x013B] = "Ada Lovelace"  # Artist
    jpeg = io.BytesIO()
    Image.fromarray(records[1]["pixels"]).save(jpeg, format="JPEG", exif=exif, comment=b"Ada Lovelace", quality=95)
    records[1]["png"] = jpeg.getvalue()
    assert b"Ada Lovelace" in records[1]["png"]
    r = upload_images(client, writer, images_zip(records))
    assert r.status_code == 201, r.text
    assert b"Lovelace" not in get_store().get_bytes(r.json()["sha256"])
    for png in stored_table(r.json()["sha256"]).column("image").to_pylist():
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.info == {} and not image.getexif() and not getattr(image, "text", {})
        assert b"tEXt" not in png and b"iTXt" not in png and b"zTXt" not in png and b"eXIf" not in png


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose header says width × height: decoding it would expand that many pixels."""
    png = bytearray(image_png(np.zeros((1, 1), dtype=np.uint8)))
    header = struct.pack(">II", width, height) + bytes(png[24:29])
    png[16:29] = header
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(png)


def _zip_with(entries: dict[str, bytes], manifest: str, *, symlink: str | None = None) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.csv", manifest)
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return sink.getvalue()


def _lying_zip(records) -> bytes:
    """A zip whose directory declares the first image smaller than it is."""
    data = bytearray(images_zip(records))
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = archive.getinfo("works/000.png")
    smaller = struct.pack("<I", 10)
    local = info.header_offset
    data[local + 22:local + 26] = smaller  # local header: uncompressed size
    position = 0
    while True:  # each central directory record: its uncompressed size at offset 24, name at 46
        position = bytes(data).index(b"PK\x01\x02", position)
        name_length = struct.unpack("<H", data[position + 28:position + 30])[0]
        if bytes(data[position + 46:position + 46 + name_length]) == b"works/000.png":
            data[position + 24:position + 28] = smaller
            break
        position += 4
    return bytes(data)


def _hostile() -> dict[str, tuple[int, bytes, dict, dict]]:
    """case → (status, file, form fields, settings)."""
    works = creator_works(creators=3, per_creator=2)
    manifest = "file,creator,style\n" + "".join(f"works/{i:03d}.png,{r['creator']},{r['label']}\n" for i, r in enumerate(works))
    bomb = [dict(r) for r in works]
    bomb[3]["png"] = _png_claiming(60_000, 60_000)
    mixed = [dict(r) for r in works]
    mixed[4]["png"] = image_png(np.zeros((16, 12), dtype=np.uint8))
    channels = [dict(r) for r in works]
    channels[2]["png"] = image_png(np.zeros((16, 16, 3), dtype=np.uint8))
    garbage = [dict(r) for r in works]
    garbage[1]["png"] = b"\x89PNG\r\n\x1a\n" + bytes(200)
    gif = [dict(r) for r in works]
    gif_bytes = io.BytesIO()
    Image.fromarray(works[0]["pixels"]).save(gif_bytes, format="GIF")
    gif[0]["png"] = gif_bytes.getvalue()
    zeros = bytes(2 * 1024 * 1024)
    images = {f"works/{i:03d}.png": r["png"] for i, r in enumerate(works)}
    parquet_strings = pa.table({"creator": [r["creator"] for r in works], "image": ["not bytes"] * len(works)})
    strings = io.BytesIO()
    pq.write_table(parquet_strings, strings)
    return {
        "decompression bomb": (422, images_zip(bomb), {}, {}),
        "decompression bomb in parquet": (422, images_parquet(bomb), {"image_column": "image"}, {}),
        "over max image pixels": (422, images_zip(works), {}, {"MAX_IMAGE_PIXELS": "255"}),
        "zip bomb by ratio": (413, images_zip(works, extra={"padding.bin": zeros}), {}, {}),
        "zip over total size": (413, images_zip(works), {}, {"MAX_ZIP_UNCOMPRESSED_BYTES": "600"}),
        "too many entries": (413, images_zip(works), {}, {"MAX_ZIP_ENTRIES": "3"}),
        "size lies in the directory": (422, _lying_zip(works), {}, {}),
        "undecodable image": (422, images_zip(garbage), {}, {}),
        "a gif": (422, images_zip(gif), {}, {}),
        "mixed sizes": (422, images_zip(mixed), {}, {}),
        "mixed channels": (422, images_zip(channels), {}, {}),
        "path climbing out": (422, _zip_with({**images, "../evil.png": works[0]["png"]}, manifest), {}, {}),
        "manifest climbing out": (422, _zip_with(images, manifest.replace("works/001.png", "works/../../x.png")), {}, {}),
        "absolute path": (422, _zip_with({**images, "/tmp/evil.png": works[0]["png"]}, manifest), {}, {}),
        "symlink": (422, _zip_with(images, manifest, symlink="works/link.png"), {}, {}),
        "missing file": (422, _zip_with(images, manifest.replace("works/005.png", "works/999.png")), {}, {}),
        "no manifest": (422, images_zip(works, manifest="").replace(b"manifest.csv", b"manifest.txt"), {}, {}),
        "not an archive": (422, b"hello,world\n", {}, {}),
        "broken archive": (422, images_zip(works)[:300], {}, {}),
        "string image column": (422, strings.getvalue(), {"image_column": "image", "label_column": None}, {}),
        "missing image column": (422, images_zip(works), {"image_column": "path"}, {}),
        "features on images": (422, images_zip(works), {"feature_columns": "style"}, {}),
        "text and images": (422, images_zip(works), {"text_column": "style", "label_column": None}, {}),
    }


@pytest.mark.parametrize("case", list(_hostile()))
def test_hostile_image_uploads_are_refused_and_store_nothing(client, writer, settings_env, data_dir, monkeypatch, case):
    status, content, fields, settings = _hostile()[case]
    settings_env(**settings)
    loaded = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: loaded.append(image.size) or original(image))
    before = artifact_files(data_dir)
    r = upload_images(client, writer, content, **fields)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "artist" not in r.text and "works/" not in r.text
    assert counts() == (0, 0, 0)
    assert artifact_files(data_dir) == before
    assert not list((data_dir / "tmp").iterdir())
    named = {"decompression bomb": "OBLIVIATE_MAX_IMAGE_PIXELS", "decompression bomb in parquet": "OBLIVIATE_MAX_IMAGE_PIXELS",
             "over max image pixels": "OBLIVIATE_MAX_IMAGE_PIXELS", "zip bomb by ratio": "OBLIVIATE_MAX_ZIP_RATIO",
             "zip over total size": "OBLIVIATE_MAX_ZIP_UNCOMPRESSED_BYTES", "too many entries": "OBLIVIATE_MAX_ZIP_ENTRIES"}
    if case in named:
        assert named[case] in r.json()["detail"]
    if "pixels" in named.get(case, "").lower():
        # Refused from the header: no image that large, or that one, was decoded.
        assert all(width * height <= 256 for width, height in loaded)
    if case == "mixed sizes":
        assert r.json()["detail"].startswith("Record 5 ")


def test_versions_keep_one_size_and_kind_and_tombstones_filter_creators(client, writer):
    records = creator_works(creators=3, per_creator=2)
    assert upload_images(client, writer, images_zip(records)).status_code == 201
    with session_scope() as session:
        session.add(Tombstone(client="acme", subject_key=subject_key("creator", creator_id(1)), request_id=uuid.uuid4(),
                              created_at=utcnow()))
    again = upload_images(client, writer, images_parquet(records, image_column="picture"), image_column="picture")
    assert again.status_code == 409  # another image column than the dataset's
    again = upload_images(client, writer, images_zip(records))
    assert again.status_code == 201 and again.json()["version"] == 2
    assert (again.json()["filtered_rows"], again.json()["subjects"]) == (2, 2)
    bigger = creator_works(creators=3, per_creator=2, size=32)
    assert upload_images(client, writer, images_zip(bigger)).status_code == 409
    assert upload_images(client, writer, images_zip(records, with_labels=False), label_column=None).status_code == 409
    assert upload(client, writer, csv_bytes(digits_table(subjects=20)), name="art").status_code == 409
    assert upload_images(client, writer, images_zip(records), name="digits-new").status_code == 201
    assert upload(client, writer, csv_bytes(digits_table(subjects=20)), name="digits").status_code == 201
    assert upload_images(client, writer, images_zip(records), name="digits").status_code == 409


def test_an_erasure_writes_a_version_without_the_creator_and_keeps_record_ids(client, writer, make_key):
    records = creator_works(creators=4, per_creator=3)
    body = upload_images(client, writer, images_zip(records)).json()
    erased = subject_key("creator", creator_id(2))
    with session_scope() as session:
        version = session.get(DatasetVersion, uuid.UUID(body["id"]))
        outcome = dataset_service.erase_subjects(session, version, [erased], uuid.uuid4())
        new_id, new_sha = outcome.version.id, outcome.version.sha256
        assert (outcome.created, outcome.rows_removed, outcome.subjects_removed) == (True, 3, 1)
    before, after = stored_table(body["sha256"]), stored_table(new_sha)
    kept = [i for i, r in enumerate(records) if r["creator"] != creator_id(2)]
    assert after.column("record_id").to_pylist() == kept
    assert after.column("image").to_pylist() == before.column("image").take(pa.array(kept)).to_pylist()
    assert erased not in after.column("subject_key").to_pylist()
    with session_scope() as session:
        index = dict(session.execute(select(SubjectRecords.subject_key, SubjectRecords.record_ids).where(
            SubjectRecords.dataset_version_id == new_id)).all())
        assert session.get(Dataset, uuid.UUID(body["dataset_id"])).current_version == 2
    assert erased not in index and index[subject_key("creator", creator_id(3))] == [9, 10, 11]
    reviewer = make_key("requests:review,requests:read,models:read")
    found = client.post("/v1/subjects/lookup", json={"identifiers": {"creator": creator_id(2)}}, headers=reviewer)
    assert found.status_code == 200, found.text
    assert [(d["version"], d["current"]) for d in found.json()["datasets"]] == [(1, False)]
