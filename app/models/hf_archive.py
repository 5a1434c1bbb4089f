"""Checking an uploaded Hugging Face `save_pretrained` directory (a tar or zip) without torch or
transformers, and normalising it into the one form that is stored (docs/byo-language-model.md).

The archive is read from a file on disk, member by member; nothing is read whole into memory
but small JSON files. It is refused (422, or 413 when too large) before anything is stored when:
- a member is a link, a device or anything but a file or folder, or its path is absolute,
  climbs with `..`, or nests deeper than one folder holding the whole directory;
- a file is not one a base may hold (`ALLOWED`, sharded safetensors): pickles (`*.bin`, `*.pt`,
  `*.pkl`…) and code (`*.py`) above all;
- a configuration names custom code (`auto_map`) or an architecture other than gpt2, llama or
  qwen2;
- the safetensors headers do not describe exactly the tensors config.json gives, shape by shape,
  in a float dtype, with finite values, or hold more parameters than the model budget allows;
- the unpacked files would exceed OBLIVIATE_MAX_IMPORT_BYTES, or the archive holds more than
  `MAX_MEMBERS` members (bombs).

What is stored is an uncompressed tar of the allowed files at its top level, sorted by name,
with zeroed times and owners: the same files always give the same sha256. Problems name a file
by its name only when that is a plain file name holding no e-mail address or phone number, else
by its position (`file N`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.errors import PayloadTooLarge, Unprocessable
from app.families import budget
from app.families import hf_architectures as hf
from app.models import weights as weight_checks
from app.pii import find_identifier

# The files a base may hold, at the top level of the stored tar.
ALLOWED = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "added_tokens.json",
})
SHARD = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
# Named in refusals, so the caller knows why their file is not welcome.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
CODE_SUFFIXES = (".py", ".pyc", ".so")
WEIGHT_DTYPES = ("F32", "F16", "BF16")
# Members of one archive (folders included); a save_pretrained directory has a dozen.
MAX_MEMBERS = 1024
# Largest file other than the weights (tokenizer.json of a large vocabulary is a few MB).
MAX_SMALL_FILE_BYTES = 32 * 1024 * 1024
CHUNK = 1024 * 1024
# Largest long-name or pax extended header of a tar member; real ones are a few hundred bytes.
MAX_HEADER_BYTES = 1024 * 1024
_LONG_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
# Remote code in any of the JSON files transformers reads while loading.
_CODE_KEYS = ("auto_map",)
_JSON_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "tokenizer.json", "model.safetensors.index.json")


@dataclass(frozen=True)
class CheckedBase:
    """A checked archive: its normalised tar on disk and what the base row records."""

    architecture: hf.Architecture
    parameters: int
    # Relative name → {"sha256", "size"}.
    files: dict[str, dict[str, Any]]
    tar_path: Path
    tar_sha256: str


def _refuse(message: str) -> Unprocessable:
    return Unprocessable(message)


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _label(name: str, position: int) -> str:
    """How a refusal names a member: by its name when that is a plain file name holding no
    e-mail address or phone number (app/pii.py), else by its position in the archive."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ALLOWED or (_PLAIN_NAME.match(leaf) and find_identifier(leaf) is None):
        return leaf
    return f"file {position}"


def _reason(leaf: str) -> str:
    lowered = leaf.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        return "is a pickle or other executable format; weights are accepted as safetensors only"
    if lowered.endswith(CODE_SUFFIXES):
        return "is code; custom code (trust_remote_code) is never run"
    return "is not one of the files a base may hold (config, safetensors weights, tokenizer files)"


def _split(name: str, position: int, *, folder: bool = False) -> list[str]:
    """The member's path as its parts, `./` dropped; an empty list only for the top folder."""
    parts = name.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # a folder's trailing slash
    while parts and parts[0] == ".":
        parts = parts[1:]
    bad = (
        (not parts and not folder) or name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name)
        or any(part in ("", ".", "..") for part in parts)
    )
    if bad:
        raise _refuse(f"Member {position} of the archive has an absolute or climbing path; paths stay inside the archive.")
    return parts


@dataclass
class _Member:
    position: int
    parts: list[str]
    size: int
    open: Any  # () → a binary stream of the member's bytes


class _OversizedHeader(Exception):
    """Not a TarError, so that tarfile lets it through instead of reading on."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a long-name or pax extended header whole into memory: one that claims a
    gigabyte is refused before it is read."""

    def _proc_member(self, tarfile_):  # type: ignore[no-untyped-def]
        if self.type in _LONG_HEADERS and self.size > MAX_HEADER_BYTES:
            raise _OversizedHeader
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _tar_members(source: IO[bytes]) -> Iterator[_Member | None]:
    try:
        archive = tarfile.open(fileobj=source, mode="r:*", tarinfo=_BoundedTarInfo)
    except _OversizedHeader:
        raise _refuse("A tar header of the archive is too long.") from None
    except (tarfile.TarError, OSError, EOFError):
        raise _refuse("The archive is neither a tar (optionally gzip, bzip2 or xz compressed) nor a zip file.") from None
    with archive:
        position = 0
        while True:
            try:
                member = archive.next()
            except _OversizedHeader:
                raise _refuse("A tar header of the archive is too long.") from None
            except (tarfile.TarError, OSError, EOFError):
                raise _refuse("The tar archive is damaged.") from None
            if member is None:
                return
            position += 1
            if position > MAX_MEMBERS:
                raise _refuse(f"The archive holds more than {MAX_MEMBERS} members.")
            archive.members.clear()  # iterate without keeping every header
            parts = _split(member.name, position, folder=member.isdir())
            if member.issym() or member.islnk():
                raise _refuse(f"Member {position} of the archive is a link; links are refused.")
            if member.isdir():
                yield None
                continue
            if not member.isreg() or member.issparse():
                raise _refuse(f"Member {position} of the archive is a device, pipe or other special file.")
            yield _Member(position, parts, member.size, lambda m=member: archive.extractfile(m))


def _zip_members(source: IO[bytes]) -> Iterator[_Member | None]:
    # The central directory's own count, before zipfile reads every entry into memory.
    end = zipfile._EndRecData(source)  # type: ignore[attr-defined]
    if end is None or end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:  # type: ignore[attr-defined]
        raise _refuse(f"The zip archive is damaged or holds more than {MAX_MEMBERS} members.")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise _refuse("The zip archive is damaged.") from None
    with archive:
        for position, info in enumerate(archive.infolist(), start=1):
            parts = _split(info.filename, position, folder=info.is_dir())
            kind = (info.external_attr >> 16) & 0o170000
            if kind == 0o120000:
                raise _refuse(f"Member {position} of the archive is a link; links are refused.")
            if kind not in (0, 0o100000, 0o040000):
                raise _refuse(f"Member {position} of the archive is a device, pipe or other special file.")
            if info.flag_bits & 0x1:
                raise _refuse(f"Member {position} of the archive is encrypted.")
            if info.is_dir():
                yield None
                continue
            yield _Member(position, parts, info.file_size, lambda i=info: archive.open(i))


def _is_zip(source: IO[bytes]) -> bool:
    source.seek(0)
    magic = source.read(4)
    source.seek(0)
    return magic in (b"PK\x03\x04", b"PK\x05\x06")


def extract(source: IO[bytes], workdir: Path, max_bytes: int) -> dict[str, dict[str, Any]]:
    """Unpack the allowed files of the archive into `workdir`, hashing them as they stream;
    answers name → {"sha256", "size"}. Refuses as the module says."""
    members = _zip_members(source) if _is_zip(source) else _tar_members(source)
    files: dict[str, dict[str, Any]] = {}
    folder: list[str] | None = None
    total = 0
    for member in members:
        if member is None:
            continue  # a folder entry; its files say where they are
        # The files at the top, or all in one folder (`tar czf base.tgz my-model/`).
        *prefix, leaf = member.parts
        if len(prefix) > 1 or (folder is not None and prefix != folder):
            raise _refuse(f"{_label(leaf, member.position)} is not at the top of the save_pretrained "
                          "directory; the archive holds its files, or one folder with them.")
        folder = prefix
        label = _label(leaf, member.position)
        if leaf not in ALLOWED and not SHARD.match(leaf):
            raise _refuse(f"{label} {_reason(leaf)}.")
        if leaf in files:
            raise _refuse(f"The archive holds {label} twice.")
        limit = max_bytes if leaf.endswith(".safetensors") else MAX_SMALL_FILE_BYTES
        if member.size > limit or total + member.size > max_bytes:
            raise PayloadTooLarge(f"Unpacked, the archive is larger than {max_bytes} bytes (OBLIVIATE_MAX_IMPORT_BYTES).")
        digest, size = hashlib.sha256(), 0
        try:
            with member.open() as stream, open(workdir / leaf, "wb") as target:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    size += len(chunk)
                    # Headers may lie about sizes (a zip bomb): count what actually comes out.
                    if size > limit or total + size > max_bytes:
                        raise PayloadTooLarge(
                            f"Unpacked, the archive is larger than {max_bytes} bytes (OBLIVIATE_MAX_IMPORT_BYTES).")
                    digest.update(chunk)
                    target.write(chunk)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            raise _refuse(f"{label} cannot be read: the archive is damaged.") from None
        total += size
        files[leaf] = {"sha256": digest.hexdigest(), "size": size}
    if not files:
        raise _refuse("The archive holds no files.")
    return files


def _json(workdir: Path, name: str) -> Any:
    try:
        value = json.loads((workdir / name).read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse(f"{name} is not valid JSON.") from None
    if name != "vocab.json" and isinstance(value, dict) and any(key in value for key in _CODE_KEYS):
        raise _refuse(f"{name} names custom code (auto_map); custom code (trust_remote_code) is never run.")
    return value


def _weight_files(files: dict[str, dict[str, Any]], workdir: Path) -> list[str]:
    shards = sorted(name for name in files if SHARD.match(name))
    single = "model.safetensors" in files
    indexed = "model.safetensors.index.json" in files
    if single and (shards or indexed):
        raise _refuse("The archive holds both model.safetensors and sharded weights; give one or the other.")
    if single:
        return ["model.safetensors"]
    if not shards:
        raise _refuse("The archive holds no weights: model.safetensors, or model-NNNNN-of-NNNNN.safetensors shards "
                      "with model.safetensors.index.json (safetensors only; pickled weights are refused).")
    if not indexed:
        raise _refuse("Sharded weights need their model.safetensors.index.json.")
    count = int(SHARD.match(shards[0]).group(2))  # type: ignore[union-attr]
    expected = [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    if shards != expected:
        raise _refuse(f"The weight shards are not model-00001-of-{count:05d}.safetensors to "
                      f"model-{count:05d}-of-{count:05d}.safetensors, each once.")
    return shards


def _header(path: Path, name: str) -> tuple[dict[str, dict], int, int]:
    """The safetensors header of a file on disk, the offset of its data and the data's size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _refuse(f"{name} is not safetensors (too short).")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(weight_checks.MAX_HEADER_BYTES, size - 8):
            raise _refuse(f"{name} is not safetensors (its header length is out of range).")
        head = prefix + handle.read(length)
    try:
        return weight_checks.read_header(head), 8 + length, size - 8 - length
    except weight_checks.WeightsError as exc:
        raise _refuse(f"{name}: {exc}") from None


def _check_tensors(path: Path, name: str) -> dict[str, tuple[int, ...]]:
    """Name → shape of the file's tensors, after checking dtypes, spans and finite values."""
    header, data_start, data_size = _header(path, name)
    spans = []
    shapes: dict[str, tuple[int, ...]] = {}
    with open(path, "rb") as handle:
        for position, (tensor, info) in enumerate(sorted(header.items()), start=1):
            try:
                dtype, shape, (start, stop) = weight_checks.fields(info, position)
            except weight_checks.WeightsError as exc:
                raise _refuse(f"{name}: {exc}") from None
            if dtype not in WEIGHT_DTYPES:
                raise _refuse(f"{name}: tensor {position} is {dtype}; weights are {', '.join(WEIGHT_DTYPES)}.")
            if stop - start != math.prod(shape) * weight_checks.SIZES[dtype] or stop > data_size:
                raise _refuse(f"{name}: tensor {position}'s data does not match its shape.")
            spans.append((start, stop))
            shapes[tensor] = tuple(shape)
            _check_finite(handle, data_start + start, stop - start, dtype, name, position)
    spans.sort()
    ends = [0] + [stop for _start, stop in spans]
    if [start for start, _stop in spans] != ends[:-1] or ends[-1] != data_size:
        raise _refuse(f"{name} is not safetensors (its tensors do not cover the data exactly).")
    return shapes


def _check_finite(handle: IO[bytes], offset: int, length: int, dtype: str, name: str, position: int) -> None:
    handle.seek(offset)
    remaining = length
    while remaining:
        raw = handle.read(min(CHUNK, remaining))
        if not raw:
            raise _refuse(f"{name}: tensor {position}'s data is cut short.")
        remaining -= len(raw)
        try:
            weight_checks.check_finite(memoryview(raw), dtype, position)
        except weight_checks.WeightsError:
            raise _refuse(f"{name}: tensor {position} contains NaN or infinite values.") from None


def _match_architecture(arch: hf.Architecture, shapes: dict[str, tuple[int, ...]]) -> int:
    """Compare the checkpoint's tensors with the ones config.json describes; answers the
    parameter count (buffers and a tied output projection not counted)."""
    if arch.model_type == "gpt2" and shapes and not any(n.startswith("transformer.") for n in shapes):
        # GPT-2 checkpoints of the base model (the Hub's own gpt2) name tensors without the prefix.
        shapes = {(n if n == "lm_head.weight" else f"transformer.{n}"): s for n, s in shapes.items()}
    expected = hf.tensor_shapes(arch)
    optional = hf.buffer_shapes(arch)
    if arch.tied:
        optional["lm_head.weight"] = (arch.vocab_size, arch.width)
    for position, (tensor, shape) in enumerate(sorted(shapes.items()), start=1):
        wanted = expected.get(tensor, optional.get(tensor))
        if wanted is None:
            raise _refuse(f"Tensor {position} of the weights is not a parameter of the {arch.model_type} architecture "
                          "that config.json describes.")
        if shape != wanted:
            raise _refuse(f"Tensor {position} of the weights has shape {list(shape)}; config.json gives "
                          f"{list(wanted)} for it.")
    missing = [tensor for tensor in expected if tensor not in shapes]
    if missing:
        raise _refuse(f"The weights lack {len(missing)} tensors of the {arch.model_type} architecture that config.json "
                      "describes.")
    return hf.parameter_count(expected)


def check(files: dict[str, dict[str, Any]], workdir: Path) -> tuple[hf.Architecture, int]:
    """The architecture and parameter count of extracted files, or a refusal."""
    if "config.json" not in files:
        raise _refuse("The archive has no config.json.")
    for name in _JSON_FILES:
        if name in files:
            _json(workdir, name)
    try:
        arch = hf.parse(_json(workdir, "config.json"))
    except hf.ArchitectureError as exc:
        raise _refuse(f"config.json: {exc}") from None
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= set(files):
        raise _refuse("The archive has no tokenizer: tokenizer.json, or vocab.json with merges.txt.")
    weight_files = _weight_files(files, workdir)
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, str] = {}
    for name in weight_files:
        for tensor, shape in _check_tensors(workdir / name, name).items():
            if tensor in shapes:
                raise _refuse(f"{name} repeats a tensor of another shard.")
            shapes[tensor], where[tensor] = shape, name
    if len(weight_files) > 1:
        index = _json(workdir, "model.safetensors.index.json")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if weight_map != where:
            raise _refuse("model.safetensors.index.json does not map exactly the shards' tensors to their files.")
    parameters = _match_architecture(arch, shapes)
    try:
        budget.check_parameters(parameters)
    except budget.BudgetExceeded as exc:
        raise _refuse(str(exc)) from None
    return arch, parameters


def normalise(files: dict[str, dict[str, Any]], workdir: Path) -> tuple[Path, str]:
    """The stored form: an uncompressed tar of the files, sorted, with zeroed times and owners."""
    path = workdir.parent / f"{workdir.name}.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = files[name]["size"], 0  # mode 0o644, owner 0: TarInfo's defaults
            with open(workdir / name, "rb") as handle:
                archive.addfile(info, handle)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return path, digest.hexdigest()


def read(source: IO[bytes], workdir: Path, max_bytes: int) -> CheckedBase:
    """Extract, check and normalise an uploaded archive into `workdir` (an empty folder)."""
    files = extract(source, workdir, max_bytes)
    arch, parameters = check(files, workdir)
    tar_path, tar_sha = normalise(files, workdir)
    shutil.rmtree(workdir)  # the tar holds them now
    return CheckedBase(arch, parameters, files, tar_path, tar_sha)

