"""Hostile inputs for the fuzz runs (tests/system/test_fuzz.py and bench/fuzz.sh): callback URLs that
point inside the network in the many ways an address can be written, and requests that carry an
identifier where it must be neither stored nor echoed (unknown field names, external ids,
disguised in reasons). Each case is (body, secret): the body must be refused with 422, and the
secret must not appear in the answer."""

from __future__ import annotations

import io
import ipaddress
import json
import random
import string
import tarfile
from collections.abc import Iterator

from tests.objects import request_body

INTERNAL = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
            "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"]


def _address(rng: random.Random) -> str:
    network = ipaddress.ip_network(rng.choice(INTERNAL))
    address = network[rng.randrange(network.num_addresses)] if network.num_addresses > 1 else network[0]
    if address.version == 6:
        return f"[{address}]"
    value = int(address)
    return rng.choice([
        str(address), str(value), hex(value), f"[::ffff:{address}]", f"[64:ff9b::{address}]",
        ".".join(f"0{int(part):o}" for part in str(address).split(".")),
        f"{value >> 24}.{value & 0xFFFFFF}",  # 127.1-style short forms
    ])


def _word(rng: random.Random, size: int = 8) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(size))


def _email(rng: random.Random) -> str:
    return f"{_word(rng)}.{_word(rng, 5)}@{_word(rng, 6)}.org"


def _disguised(rng: random.Random, email: str) -> str:
    local, domain = email.split("@")
    return rng.choice([
        f"{local}%40{domain}", f"{local}%2540{domain}", f"{local}＠{domain}", f"{local}\u200b@{domain}",
        f"{local} (at) {domain.replace('.', ' (dot) ')}", f"{local}[at]{domain}", f"{local}&#64;{domain}",
        f"{local[:3]}\u200d{local[3:]}@{domain}",
        # Issue 20, item 7: the forms the second review got past the detector.
        f"{local} at {domain}", f"{local}_at_{domain.replace('.', '_dot_')}", f"{' . '.join(local.split('.'))} @ {domain}",
        f"{local}@{domain.replace('.', chr(0x3002))}", f"{local}@@{domain}", f"{local}%u0040{domain}",
    ])


def _base(rng: random.Random) -> dict:
    return request_body(identifiers={"user_id": f"hostile-{_word(rng)}"})


def _nested_safetensors(depth: int) -> bytes:
    header = b'{"w": ' + b"[" * depth + b"]" * depth + b"}"
    return len(header).to_bytes(8, "little") + header


def _climbing_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("../config.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    return buffer.getvalue()


def endpoint_cases(dataset_version_id: str, dataset_id: str) -> Iterator[tuple[str, str, str, dict, int]]:
    """(label, method, path, httpx keyword arguments, expected status) of hostile inputs to other
    endpoints (issue 20, items 1, 9, 10, 13), for a caller whose client is `fuzz` and who can import
    into `dataset_version_id` and train on `dataset_id`. Each once answered 500 or was accepted."""
    for temperature in (1e-300, 5e-324, 0.001):
        yield (f"generate at temperature {temperature}", "post", "/v1/models/fuzz-absent/generate",
               {"json": {"prompt": "x", "temperature": temperature}}, 422)
    metadata = json.dumps({"name": "fuzz-nested", "family": "logistic_regression",
                           "dataset_version_id": dataset_version_id, "record_ids": [0]})
    yield ("safetensors header nested 100k deep", "post", "/v1/models/import",
           {"data": {"metadata": metadata}, "files": {"weights": ("w.safetensors", _nested_safetensors(100_000))}}, 422)
    yield ("an MLP of 8 × 8192 hidden units (470M parameters) over the model budget", "post", "/v1/models",
           {"json": {"name": "fuzz-wide", "family": "mlp_classifier", "dataset_id": dataset_id,
                     "params": {"hidden": [8192] * 8}}}, 422)
    yield ("hf_causal_lm config that names remote code (auto_map)", "post", "/v1/models",
           {"json": {"name": "fuzz-remote", "family": "hf_causal_lm", "dataset_id": dataset_id,
                     "params": {"config": {"model_type": "gpt2", "auto_map": {"AutoModel": "evil.Model"}}}}}, 422)
    yield ("a base archive whose member climbs out of it", "post", "/v1/models/import",
           {"data": {"metadata": json.dumps({"kind": "base", "name": "fuzz-base"})},
            "files": {"archive": ("base.tar", _climbing_tar())}}, 422)
    for lookalike in ("FUZZ", "fuzz ", "Fuzz  "):
        yield (f"client name {lookalike!r} beside 'fuzz'", "post", "/v1/keys",
               {"json": {"name": "lookalike", "client": lookalike, "scopes": ["requests:read"]}}, 409)


def cases(count: int, seed: int = 0) -> Iterator[tuple[str, dict, str]]:
    """(label, body, secret) × count, deterministic for a seed."""
    rng = random.Random(seed)
    for index in range(count):
        body, email = _base(rng), _email(rng)
        kind = index % 5
        if kind == 0:
            host = _address(rng)
            body["callback_url"] = f"https://{host}:{rng.randrange(1, 65536)}/{_word(rng)}"
            yield "internal callback", body, "\x00"  # nothing to keep secret, only the refusal
        elif kind == 1:
            body[email] = rng.choice([1, "x", None, {"a": 1}])
            yield "identifier as an unknown field", body, email
        elif kind == 2:
            body["subject"][email] = 1
            yield "identifier as an unknown subject field", body, email
        elif kind == 3:
            body["external_id"] = rng.choice([email, email.replace("@", "%40"), f"+4420{rng.randrange(10**7, 10**8)}"])
            yield "identifier as external_id", body, body["external_id"]
        else:
            body["reason"] = f"please erase {_disguised(rng, email)} too"
            yield "identifier disguised in a reason", body, email.split("@")[0]
