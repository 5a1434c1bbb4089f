"""A privacy team's day in the dashboard: the request list's outcome and verification columns,
prefix search on external_id, the CSV export of the filtered list, and the override an
unverified approval needs."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from app.db import utcnow

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


def test_the_printable_report_shows_a_page_per_request_with_what_was_searched(client):
    plaintext = new_key()
    done = new_request(client, plaintext, external_id="report-1", verification={"status": "verified", "method": "portal"})
    waiting = new_request(client, plaintext, external_id="report-2")
    complete_without_data(done)
    sign_in(client, plaintext)
    page = client.get(f"/admin/requests/{done}/report").text
    assert page.count('class="report-page"') == 1 and "report.css" in page
    assert "GDPR (GDPR Art. 12(3))" in page and "completed: no data" in page and "verified (portal)" in page
    assert "Identifier kinds: email" in page and "Signature verified" in page and "format 3" in page
    # Actors appear by key name and owner (this key has none recorded), never as a bare key id.
    assert "key:" not in page.split("<h2>Timeline</h2>")[1]
    both = client.get("/admin/requests/report?q=report-").text
    assert both.count('class="report-page"') == 2
    assert "Not searched yet" in both and "None yet: a certificate is issued" in both
    assert ">Printable report</a>" in client.get(f"/admin/requests/{waiting}").text
    sign_in(client, new_key(client="beta"))
    assert client.get(f"/admin/requests/{done}/report").status_code == 404


def test_keys_have_an_owner_and_actors_are_named_by_key_and_owner(client):
    from app.db import session_scope
    from app.keys import service as key_service

    with session_scope() as session:
        key, plaintext = key_service.create_key(session, "privacy-desk", ["requests:write", "requests:read", "requests:review"],
                                                client="acme", owner="Ana Lima")
        key_id = str(key.id)
    request_id = new_request(client, plaintext)
    sign_in(client, plaintext)
    token = csrf_of(client, f"/admin/requests/{request_id}/hold")
    assert client.post(f"/admin/requests/{request_id}/hold", data={"csrf_token": token, "reason": "documents"}).status_code == 200
    page = client.get(f"/admin/requests/{request_id}").text
    assert "by key privacy-desk (Ana Lima)" in page and key_id not in page.split('id="audit"')[1]
    # Admins set the owner when they create a key, in the dashboard and over the API.
    admin = new_key("admin", client="ops")
    sign_in(client, admin)
    token = csrf_of(client, "/admin/keys")
    created = client.post("/admin/keys", data={"csrf_token": token, "name": "portal", "client": "beta",
                                               "owner": "Bo Chen", "scopes": ["requests:write"]})
    assert created.status_code == 201 and "<td>Bo Chen</td>" in created.text
    over_api = client.post("/v1/keys", headers={"Authorization": f"Bearer {admin}"},
                           json={"name": "crm", "owner": "Cy Diaz", "client": "beta", "scopes": ["requests:read"]})
    assert over_api.status_code == 201 and over_api.json()["owner"] == "Cy Diaz"


def test_overview_tiles_for_overdue_and_review_waiting_stand_out_only_when_non_zero(client):
    plaintext = new_key()
    request_id = new_request(client, plaintext)
    sign_in(client, plaintext)
    calm = client.get("/admin").text
    assert '<li class="figure "><a href="/admin/requests?status=needs_review"><span class="n">0</span> waiting for review' in calm
    assert '<li class="figure "><a href="/admin/requests?overdue=yes">' in calm
    set_columns(request_id, status="needs_review", status_reason="unresolvable_identifier_kind")
    other = new_request(client, plaintext)
    set_columns(other, due_at=utcnow() - timedelta(days=1))
    loud = client.get("/admin").text
    assert '<li class="figure bad"><a href="/admin/requests?status=needs_review"><span class="n">1</span> waiting for review' in loud
    assert '<li class="figure bad"><a href="/admin/requests?overdue=yes"><span class="n">1</span> overdue' in loud


def test_subject_lookup_says_when_and_by_which_request_a_subject_was_erased(client):
    plaintext = new_key()
    email = "erased.person.99@example.org"
    request_id = new_request(client, plaintext, external_id="dsr-erased-1", email=email)
    sign_in(client, plaintext)
    token = csrf_of(client, "/admin/subjects")
    before = client.post("/admin/subjects", data={"csrf_token": token, "kind": "email", "identifier": email}).text
    assert "No completed erasure request names this subject" in before
    complete_without_data(request_id)
    after = client.post("/admin/subjects", data={"csrf_token": token, "kind": "email", "identifier": email}).text
    assert f'by request\n    <a href="/admin/requests/{request_id}">dsr-erased-1</a>' in after
    assert "(no data found)" in after and "erased.person" not in after
    # Another client's reviewer learns nothing of it.
    sign_in(client, new_key(client="beta"))
    token = csrf_of(client, "/admin/subjects")
    theirs = client.post("/admin/subjects", data={"csrf_token": token, "kind": "email", "identifier": email}).text
    assert "dsr-erased-1" not in theirs
