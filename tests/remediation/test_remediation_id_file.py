"""A remediation request from a file of record ids (POST /v1/remediation-requests/upload): one
id per line or CSV with a record_id column; the same dry run as the JSON list; hostile files
(binary, too big, too many ids, unknown or repeated ids, empty, bad encoding) answer a problem
that names lines and counts, never ids, and store nothing."""

from __future__ import annotations

import json

import pytest

from tests.factories import assert_problem
from tests.worker import execute_queued

URL = "/v1/remediation-requests/upload"
# Ids the digits hold (0…1796), and one they do not; both distinctive enough to spot if echoed.
HELD = [1234, 1235, 1236, 17, 1500]
UNKNOWN = 987654


def _meta(dataset_id: str, **extra) -> str:
    return json.dumps({"kind": "licence", "reason": "vendor-c withdrew its licence", "dataset_id": dataset_id, **extra})


def _send(client, headers, dataset_id: str, content: bytes, *, metadata: str | None = None,
          filename: str = "ids.txt", **extra_headers):
    return client.post(URL, headers={**headers, **extra_headers},
                       data={"metadata": metadata if metadata is not None else _meta(dataset_id)},
                       files={"record_ids": (filename, content, "text/plain")})


def _count(client, headers) -> int:
    return len(client.get("/v1/remediation-requests", headers=headers).json()["items"])


def test_a_file_of_ids_gets_the_same_dry_run_as_the_json_list_and_completes(client, writer, reviewer, dataset):
    content = "".join(f"{i}\n" for i in HELD).encode()
    created = _send(client, writer, dataset, content)
    assert created.status_code == 201, created.text
    request = created.json()
    assert created.headers["location"] == f"/v1/remediation-requests/{request['id']}"
    assert request["status"] == "pending_approval"
    selection = request["selection"]
    assert selection["by"] == "record_ids" and selection["record_ids"] == len(HELD)
    assert selection["file"]["ids"] == len(HELD) and selection["file"]["format"] == "lines"
    assert selection["file"]["bytes"] == len(content) and len(selection["file"]["sha256"]) == 64

    listed = client.post("/v1/remediation-requests", headers=writer, json={
        "kind": "licence", "reason": "vendor-c withdrew its licence", "dataset_id": dataset, "record_ids": HELD})
    assert listed.status_code == 201, listed.text
    assert request["dry_run"] == listed.json()["dry_run"]
    assert request["dry_run"]["records"] == len(HELD)

    trail = client.get(f"/v1/remediation-requests/{request['id']}/audit", headers=reviewer).json()["events"]
    assert trail[0]["type"] == "remediation.created" and trail[0]["data"]["file"]["ids"] == len(HELD)
    assert not _names_ids(trail)

    url = f"/v1/remediation-requests/{request['id']}"
    assert_problem(client.post(f"{url}/approve", headers=writer), 403)  # four eyes, as for the JSON body
    assert client.post(f"{url}/approve", headers=reviewer).status_code == 200
    assert execute_queued("remediation") == ["completed"]
    done = client.get(url, headers=reviewer).json()
    assert done["status"] == "completed" and done["result"]["dataset"]["rows_removed"] == len(HELD)
    from tests.dashboard.helpers import sign_in

    sign_in(client, reviewer["Authorization"].split()[1])
    page = client.get(f"/admin/remediation/{request['id']}").text
    assert f"{len(HELD)} ids from a file (lines" in page
    certificate = client.get(f"{url}/certificate", headers=reviewer).json()["certificate"]
    assert certificate["selection"] == "record_ids" and certificate["counts"]["records"] == len(HELD)
    assert not _names_ids(certificate)


def _names_ids(document) -> bool:
    """Whether any value of a JSON document is one of the file's ids (the counts never are)."""
    if isinstance(document, dict):
        return any(_names_ids(v) for v in document.values())
    if isinstance(document, list):
        return any(_names_ids(v) for v in document)
    return isinstance(document, int) and not isinstance(document, bool) and document in HELD[:3]


def test_a_csv_with_a_record_id_column(client, writer, dataset):
    # The header's columns may come in any order; blank lines are skipped.
    content = ("\ufeffnote,record_id,origin\r\n" + "".join(f'"a, b",{i},vendor-c\r\n\r\n' for i in HELD)).encode()
    created = _send(client, writer, dataset, content, filename="ids.csv")
    assert created.status_code == 201, created.text
    assert created.json()["selection"]["file"]["format"] == "csv"
    assert created.json()["dry_run"]["records"] == len(HELD)


def _ids(*values) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


HOSTILE = {
    "empty": (b"", 422, "holds no record ids"),
    "blank lines": (b"\n\r\n\n", 422, "holds no record ids"),
    "a header and no rows": (b"record_id,origin\n", 422, "holds no record ids"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "binary"),
    "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 422, "binary"),
    "bytes that are not UTF-8": (b"1234\n\xff\xfe\xfd\n", 422, "Line 2 of the record ids file is not UTF-8"),
    "latin-1": ("1234\n12é5\n".encode("latin-1"), 422, "Line 2"),
    "utf-16": ("1234\n1235\n".encode("utf-16"), 422, "binary"),
    "a repeated id": (_ids(1234, 1235, 17, 1234, 1235), 422, "Line 4 of the record ids file repeats the record id of line 1 (2 repeated ids"),
    "an unknown id": (_ids(1234, UNKNOWN, 1235, UNKNOWN + 1), 422, "2 of the file's 4 record ids are not records"),
    "a word": (_ids(1234, "drop table datasets", 1235), 422, "Line 2"),
    "a negative id": (_ids(1234, -1235), 422, "Line 2"),
    "a fraction": (_ids(1234, "1235.5"), 422, "Line 2"),
    "an id over 2^63": (_ids(1234, 2**64 + 1234), 422, "at most 2^63 - 1"),
    "an e-mail address": (_ids(1234, "ann@example.org"), 422, "Line 2"),
    "a csv without record_id": (b"id,origin\n1234,vendor-c\n", 422, "neither a record id nor a CSV header"),
    "a csv with two record_id columns": (b"record_id,record_id\n1234,1235\n", 422, "neither a record id"),
    "a ragged csv row": (b"record_id,origin\n1234,vendor-c\n1235,vendor-c,1236\n", 422, "Line 3 of the record ids file has 3 fields"),
    "an unterminated quote": (b'record_id,origin\n1234,"vendor-c\n', 422, "not valid CSV"),
    "an overlong line": (b"1234\n" + b"1" * 70_000 + b"\n", 422, "Line 2 of the record ids file is longer"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_answer_a_problem_without_ids_and_store_nothing(client, writer, dataset, name):
    content, status, detail = HOSTILE[name]
    response = _send(client, writer, dataset, content)
    problem = assert_problem(response, status)
    assert detail in problem["detail"], problem
    for fragment in ("1234", "1235", str(UNKNOWN), "drop table", "ann@", "vendor-c"):
        assert fragment not in response.text, fragment
    assert _count(client, writer) == 0


def test_the_unknown_ids_problem_gives_counts_and_the_first_line(client, writer, dataset):
    problem = assert_problem(_send(client, writer, dataset, _ids(1234, UNKNOWN, 1235, UNKNOWN + 1)), 422)
    assert (problem["unknown"], problem["ids"], problem["line"]) == (2, 4, 2)


def test_the_size_and_count_limits(client, writer, dataset, settings_env):
    settings_env(MAX_RECORD_IDS="4", MAX_RECORD_IDS_BYTES="64")
    problem = assert_problem(_send(client, writer, dataset, _ids(*HELD)), 422)
    assert "more than 4 record ids" in problem["detail"] and problem["limit"] == 4
    assert _send(client, writer, dataset, _ids(*HELD[:4])).status_code == 201
    too_big = _send(client, writer, dataset, b"1234\n" + b"\n" * 100)
    assert_problem(too_big, 413)
    assert _count(client, writer) == 1


def test_the_middleware_refuses_a_body_far_over_the_limit(client, writer, dataset):
    from app.config import get_settings

    limit = get_settings().max_record_ids_bytes
    response = client.post(URL, headers={**writer, "Content-Type": "multipart/form-data; boundary=x",
                                         "Content-Length": str(limit + 4 * 1024 * 1024)}, content=b"--x--\r\n")
    assert_problem(response, 413)


@pytest.mark.parametrize("metadata", [
    "not json", json.dumps({"kind": "licence"}), "[]",
])
def test_bad_metadata_is_refused(client, writer, dataset, metadata):
    assert_problem(_send(client, writer, dataset, _ids(*HELD), metadata=metadata), 422)
    assert _count(client, writer) == 0


def test_metadata_rules_as_for_the_json_body(client, writer, dataset):
    for extra in ({"predicate": 'source == "vendor-b"'}, {"record_ids": [1]}, {"source": "vendor-b"},
                  {"reason": "ask ann@example.org"}, {"trigger": {"features": {"pixel_0": 1}, "target_label": 7}}):
        response = _send(client, writer, dataset, _ids(*HELD), metadata=_meta(dataset, **extra))
        assert_problem(response, 422)
        assert "ann@" not in response.text
    other = _send(client, writer, dataset, _ids(*HELD), metadata=_meta("0b7f0d9e-0000-4000-8000-000000000000"))
    assert_problem(other, 404)
    assert _count(client, writer) == 0


def test_a_retry_with_the_same_key_and_file_is_a_replay(client, writer, dataset):
    first = _send(client, writer, dataset, _ids(*HELD), **{"Idempotency-Key": "slice-file-1"})
    assert first.status_code == 201, first.text
    again = _send(client, writer, dataset, _ids(*HELD), **{"Idempotency-Key": "slice-file-1"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = _send(client, writer, dataset, _ids(*HELD[:3]), **{"Idempotency-Key": "slice-file-1"})
    assert_problem(other, 422)
    assert _count(client, writer) == 1


def test_another_clients_keys_neither_select_from_nor_see_nor_approve_this_clients_slice(
        client, writer, reviewer, dataset, make_key):
    """A file names record ids, not a client: the dataset it selects from must be the caller's own,
    and the request it makes stays invisible to another client's reviewers."""
    outsider = make_key("requests:write,requests:read,requests:review,models:read", client="globex")
    assert_problem(_send(client, outsider, dataset, _ids(*HELD)), 404)
    assert _count(client, outsider) == 0 and _count(client, writer) == 0

    created = _send(client, writer, dataset, _ids(*HELD))
    assert created.status_code == 201, created.text
    url = f"/v1/remediation-requests/{created.json()['id']}"
    assert_problem(client.get(url, headers=outsider), 404)
    assert_problem(client.post(f"{url}/approve", headers=outsider), 404)
    assert _count(client, outsider) == 0
    assert client.get(url, headers=reviewer).json()["status"] == "pending_approval"
