"""callback_url cannot be turned against the operator's network (SSRF).

Before: loopback, 127.1, decimal and hex addresses, 0.0.0.0, link-local metadata and private
ranges were accepted and POSTed to, and each attempt's status code or exception class landed in
the client-readable audit trail. Now intake refuses what is visibly internal, delivery resolves
the name and refuses internal answers (a fake resolver plays DNS; no test traffic leaves
loopback), connects to the address it checked, and the trail records a generic outcome only.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from tests.objects import approve, request_body

URL = "/v1/erasure-requests"
HOSTILE = [
    "https://127.0.0.1/hook", "https://127.1/hook", "https://2130706433/hook", "https://0x7f000001/hook",
    "https://017700000001/hook", "https://0.0.0.0/hook", "https://0/hook", "https://169.254.169.254/latest/meta-data",
    "https://10.1.2.3/hook", "https://172.16.0.1/hook", "https://192.168.1.1/hook", "https://100.64.0.1/hook",
    "https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[::ffff:169.254.169.254]/hook",
    "https://[fe80::1]/hook", "https://[fc00::1]/hook", "https://[64:ff9b::a00:1]/hook", "https://224.0.0.1/hook",
    "https://localhost/hook", "https://api.localhost/hook", "https://metadata.google.internal/hook",
    "https://printer.local/hook", "https://intranet/hook", "http://hooks.example.com/hook",
    "https://user:secret@hooks.example.com/hook", "https://hooks.example.com/hook?email=jane%40example.org",
]


def body(callback: str) -> dict:
    return request_body("ssrf", callback_url=callback)


@pytest.mark.parametrize("callback", HOSTILE)
def test_intake_refuses_internal_callback_urls(client, headers, callback):
    response = client.post(URL, json=body(callback), headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_intake_accepts_a_public_https_callback(client, headers):
    assert client.post(URL, json=body("https://hooks.example.com/obliviate"), headers=headers).status_code == 201


def test_allow_lists_admit_what_the_operator_names(client, headers, settings_env):
    settings_env(WEBHOOK_ALLOW_HTTP="true", WEBHOOK_ALLOW_NETWORKS='["10.1.2.0/24"]', WEBHOOK_ALLOW_HOSTS='["hooks.internal"]')
    for callback in ("http://10.1.2.3/hook", "http://hooks.internal/hook"):
        assert client.post(URL, json=body(callback), headers=headers).status_code == 201, callback
    assert client.post(URL, json=body("http://10.1.3.1/hook"), headers=headers).status_code == 422


@pytest.mark.parametrize(("address", "allowed"), [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("169.254.169.254", False), ("0.0.0.0", False),
    ("255.255.255.255", False), ("240.0.0.1", False), ("239.1.1.1", False), ("::1", False), ("::", False),
    ("::ffff:10.0.0.1", False), ("::ffff:93.184.216.34", True), ("2002:7f00:1::", False), ("fe80::1%eth0", False),
    ("ff02::1", False), ("2001:db8::1", False), ("64:ff9b::7f00:1", False),
])
def test_address_policy(address, allowed, database_url):
    from app.webhooks.addresses import address_allowed

    assert address_allowed(address) is allowed


def _pending_delivery(client, headers, callback: str) -> str:
    created = client.post(URL, json=body(callback), headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert approve(client, headers, request_id).status_code == 200
    return request_id


def _attempts(client, headers, request_id) -> list[dict]:
    trail = client.get(f"{URL}/{request_id}/audit", headers=headers).json()
    assert trail["chain_valid"]
    return [event["data"] for event in trail["events"] if event["type"] == "webhook.attempted"]


class _Resolver:
    """Answers `first` on the first look-up and `later` on every other (DNS rebinding)."""

    def __init__(self, first: str, later: str | None = None):
        self.first, self.later, self.calls = first, later or first, 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.first if self.calls == 1 else self.later]


def test_a_public_name_resolving_to_a_private_address_is_not_contacted(client, headers):
    from workers.webhooks import deliver_due

    request_id = _pending_delivery(client, headers, "https://hooks.example.com/obliviate")
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
    assert deliver_due(resolver=_Resolver("10.0.0.7"), transport=transport) == 1
    assert sent == []
    (attempt,) = _attempts(client, headers, request_id)
    assert attempt["outcome"] == "refused" and attempt["state"] == "pending"
    assert set(attempt) == {"delivery_id", "event", "attempt", "outcome", "state"}


def test_delivery_connects_to_the_checked_address_with_the_name_for_tls(client, headers):
    from workers.webhooks import deliver_due

    request_id = _pending_delivery(client, headers, "https://hooks.example.com:8443/obliviate?client=acme")
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    deliver_due(resolver=_Resolver("93.184.216.34"), transport=transport)
    (request,) = sent
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.url.path == "/obliviate" and request.url.query == b"client=acme"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    (attempt,) = _attempts(client, headers, request_id)
    # The receiver's 500 is not in the trail, only that it turned the delivery down.
    assert attempt["outcome"] == "rejected" and "500" not in str(attempt)


class _Receiver(BaseHTTPRequestHandler):
    hosts: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.hosts.append(self.headers["Host"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_receiver(settings_env):
    settings_env(WEBHOOK_ALLOW_HTTP="true", WEBHOOK_ALLOW_NETWORKS='["127.0.0.0/8"]')
    _Receiver.hosts = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, _Receiver.hosts
    server.shutdown()


def test_a_second_dns_answer_changes_nothing(client, headers, loopback_receiver):
    from workers.webhooks import deliver_due

    port, hosts = loopback_receiver
    request_id = _pending_delivery(client, headers, f"http://hooks.example.com:{port}/obliviate")
    resolver = _Resolver("127.0.0.1", later="10.0.0.7")
    deliver_due(resolver=resolver)
    assert resolver.calls == 1
    assert hosts == [f"hooks.example.com:{port}"]
    (attempt,) = _attempts(client, headers, request_id)
    assert attempt["outcome"] == "delivered" and attempt["state"] == "delivered"


def test_an_unreachable_receiver_is_recorded_without_the_exception(client, headers, loopback_receiver):
    import socket

    from workers.webhooks import deliver_due

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    request_id = _pending_delivery(client, headers, f"http://hooks.example.com:{closed}/obliviate")
    deliver_due(resolver=_Resolver("127.0.0.1"))
    (attempt,) = _attempts(client, headers, request_id)
    assert attempt["outcome"] == "unreachable"
    assert "Error" not in str(attempt) and "status_code" not in attempt
