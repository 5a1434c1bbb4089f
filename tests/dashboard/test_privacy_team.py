"""A privacy team's day in the dashboard: the request list's outcome and verification columns,
prefix search on external_id, the CSV export of the filtered list, and the override an
unverified approval needs."""

from __future__ import annotations

import csv
import io

from tests.dashboard.helpers import complete_without_data, csrf_of, new_key, new_request, sign_in
from tests.factories import set_columns


def _api(client, plaintext, path):
    return client.get(path, headers={"Authorization": f"Bearer {plaintext}"}).json()


def test_the_list_shows_outcomes_and_verification_and_searches_by_prefix(client):
    plaintext = new_key()
    erased = new_request(client, plaintext, external_id="ticket-100")
    nodata = new_request(client, plaintext, external_id="ticket-101", verification={"status": "verified", "method": "portal"})
    denied = new_request(client, plaintext, external_id="ticket-102")
    new_request(client, plaintext, external_id="other-1")
    complete_without_data(nodata)
    set_columns(erased, status="completed", outcome="erased")
    set_columns(denied, status="denied")
    sign_in(client, plaintext)
    page = client.get("/admin/requests?q=ticket-10").text
    assert page.count(">ticket-10") == 3 and ">other-1<" not in page
    rows = {m: page.split(f">{m}</a>")[1].split("</tr>")[0] for m in ("ticket-100", "ticket-101", "ticket-102")}
    assert "<td>erased</td>" in rows["ticket-100"] and "<td>no data</td>" in rows["ticket-101"]
    assert "<td>denied</td>" in rows["ticket-102"]
    assert "verified (portal)" in rows["ticket-101"] and "unverified" in rows["ticket-100"]
    # A prefix is text, not a pattern: % and _ match only themselves.
    assert client.get("/admin/requests?q=ticket%25").text.count(">ticket-") == 0
    assert client.get("/admin/requests?q=ticket_10").text.count(">ticket-") == 0


def test_the_csv_export_holds_the_filtered_list_and_no_formula(client):
    plaintext = new_key()
    for n in range(3):
        new_request(client, plaintext, external_id=f"csv-{n}", jurisdiction="ccpa" if n else "gdpr")
    new_request(client, plaintext, external_id="=cmd|calc")
    sign_in(client, plaintext)
    assert 'href="/admin/requests.csv?jurisdiction=ccpa"' in client.get("/admin/requests?jurisdiction=ccpa").text
    response = client.get("/admin/requests.csv?jurisdiction=ccpa")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(row["external_id"] for row in table) == ["csv-1", "csv-2"]
    assert {row["identity_verification"] for row in table} == {"unverified"}
    assert {row["jurisdiction"] for row in table} == {"ccpa"}
    everything = list(csv.DictReader(io.StringIO(client.get("/admin/requests.csv").text)))
    assert len(everything) == 4
    assert "'=cmd|calc" in {row["external_id"] for row in everything}
    # Another client's key exports only its own requests.
    sign_in(client, new_key(client="beta"))
    assert list(csv.DictReader(io.StringIO(client.get("/admin/requests.csv").text))) == []


def test_approving_an_unverified_request_in_the_dashboard_needs_an_override(client):
    plaintext = new_key()
    request_id = new_request(client, plaintext)
    verified = new_request(client, plaintext, verification={"status": "verified", "method": "document"})
    sign_in(client, plaintext)
    confirm = client.get(f"/admin/requests/{request_id}/approve").text
    assert "is <strong>unverified</strong>" in confirm and 'name="override_reason"' in confirm
    assert 'name="override_reason"' not in client.get(f"/admin/requests/{verified}/approve").text
    token = csrf_of(client, f"/admin/requests/{request_id}/approve")
    refused = client.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": token})
    assert refused.status_code == 422
    assert _api(client, plaintext, f"/v1/erasure-requests/{request_id}")["status"] == "received"
    done = client.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": token, "override_reason": "Known customer."})
    assert done.status_code == 200
    event = _api(client, plaintext, f"/v1/erasure-requests/{request_id}/audit")["events"][-1]
    assert (event["type"], event["data"]["override_reason"]) == ("request.approved", "Known customer.")
    assert client.post(f"/admin/requests/{verified}/approve", data={"csrf_token": token}).status_code == 200
