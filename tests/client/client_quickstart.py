"""The quick start of docs/api.md ("Clients") through the generated client, as an integrator would write it.

Run by tests/client/test_generated_client.py with the generator's environment (httpx and attrs, what
the generated package needs) and the generated package on PYTHONPATH:

    python tests/client_quickstart.py BASE_URL API_KEY

Prints one JSON object with what it saw; the test asserts on it.
"""

from __future__ import annotations

import json
import sys

from obliviate_client import AuthenticatedClient
from obliviate_client.api.erasure_requests import (
    approve_erasure_request, create_erasure_request, get_request_audit, list_erasure_requests,
)
from obliviate_client.models import ErasureRequestCreate, ErasureRequestOut, ErasureRequestPage, Problem
from obliviate_client.types import UNSET


def main(base_url: str, token: str) -> dict:
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    body = ErasureRequestCreate.from_dict({
        "subject": {"identifiers": {"email": "jane@example.org"}},
        "jurisdiction": "gdpr", "source": "portal", "external_id": "ticket-1234",
        "identity_verification": {"status": "verified", "method": "portal"},
    })
    created = create_erasure_request.sync_detailed(client=client, body=body, idempotency_key="portal-ticket-1234")
    replayed = create_erasure_request.sync_detailed(client=client, body=body, idempotency_key="portal-ticket-1234")
    other_body = ErasureRequestCreate.from_dict({**body.to_dict(), "external_id": "ticket-9999"})
    refused = create_erasure_request.sync_detailed(client=client, body=other_body, idempotency_key="portal-ticket-1234")
    request = created.parsed
    assert isinstance(request, ErasureRequestOut), created.content

    approved = approve_erasure_request.sync(request.id, client=client)
    assert isinstance(approved, ErasureRequestOut), approved
    trail = get_request_audit.sync(request.id, client=client)

    for number in range(4):
        extra = ErasureRequestCreate.from_dict({**body.to_dict(), "external_id": f"ticket-{2000 + number}"})
        create_erasure_request.sync(client=client, body=extra)
    pages, cursor = [], UNSET
    while True:
        page = list_erasure_requests.sync(client=client, limit=2, cursor=cursor)
        assert isinstance(page, ErasureRequestPage), page
        pages.append([str(item.id) for item in page.items])
        if not page.next_cursor:
            break
        cursor = page.next_cursor

    assert isinstance(refused.parsed, Problem), refused.content
    return {
        "created": {"status": created.status_code, "id": str(request.id), "location": created.headers.get("location"),
                    "status_field": str(request.status)},
        "replayed": {"status": replayed.status_code, "id": str(replayed.parsed.id),
                     "header": replayed.headers.get("idempotent-replayed")},
        "refused": {"status": refused.status_code, "problem_status": refused.parsed.status,
                    "problem_title": refused.parsed.title},
        "approved": str(approved.status),
        "audit": {"request_id": str(trail.request_id), "chain_valid": trail.chain_valid,
                  "events": [event.type_ for event in trail.events]},
        "pages": pages,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
