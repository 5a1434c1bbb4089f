def test_create_and_read(client, headers):
    body = {"subject": {"identifiers": {"email": "A@x.org "}}, "jurisdiction": "gdpr", "source": "portal"}
    r = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.headers["location"].endswith(rid)
    assert "a@x.org" not in r.text.lower()
    r2 = client.post(f"/v1/erasure-requests/{rid}/approve", headers=headers)
    assert r2.status_code == 200 and r2.json()["status"] == "approved", r2.text
    r3 = client.post(f"/v1/erasure-requests/{rid}/approve", headers=headers)
    assert r3.status_code == 409 and r3.json()["current_status"] == "approved"
    a = client.get(f"/v1/erasure-requests/{rid}/audit", headers=headers).json()
    assert a["chain_valid"] and [e["type"] for e in a["events"]] == ["request.received", "request.approved"]
