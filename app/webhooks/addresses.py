"""Where webhooks may go: public addresses only, unless the operator names others.

A callback URL comes from a client, and the service POSTs to it from inside the operator's
network; without these checks it is a way to reach loopback services, cloud metadata
(169.254.169.254) and private ranges, and the delivery outcomes a port scanner. Intake refuses
what is visibly internal (an address literal, `localhost`, `.internal`, a single-label name);
delivery resolves the name, checks every address it resolves to, and connects to the checked
address itself, so a name that resolves elsewhere a second time (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from app.config import get_settings
from app.pii import find_identifier

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port → the addresses it resolves to (socket.getaddrinfo by default; tests pass a fake).
Resolver = Callable[[str, int], list[str]]
# Names that only mean something inside a network.
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".lan", ".intranet", ".corp", ".home.arpa")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(ValueError):
    """A callback URL or address that policy does not allow; the message names no address."""


def system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in get_settings().webhook_allow_networks]


def address_allowed(address: Address | str) -> bool:
    """Global unicast, or inside a network the operator allows (OBLIVIATE_WEBHOOK_ALLOW_NETWORKS)."""
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    target = _embedded_ipv4(address)
    if any(candidate in network for candidate in (address, target) for network in _allowed_networks()):
        return True
    return target.is_global and not (target.is_multicast or target.is_reserved or target.is_unspecified)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_allowed(host: str) -> bool:
    """A name the operator allows (OBLIVIATE_WEBHOOK_ALLOW_HOSTS): exempt from the address checks."""
    return host.rstrip(".").lower() in {name.rstrip(".").lower() for name in get_settings().webhook_allow_hosts}


def check_url(url: str) -> None:
    """What can be told without resolving anything; raises AddressRefused."""
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if get_settings().webhook_allow_http else ("https",)
    if parts.scheme not in allowed_schemes:
        raise AddressRefused("callback_url must use https" if parts.scheme == "http" else "callback_url must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("callback_url must not carry credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise AddressRefused("callback_url has no host")
    if find_identifier(unquote(parts.path + "?" + parts.query + "#" + parts.fragment)):
        raise AddressRefused("callback_url must not carry personal identifiers (an e-mail address or phone number)")
    if host_allowed(host):
        return
    literal = _literal(host)
    if literal is not None:
        if not address_allowed(literal):
            raise AddressRefused("callback_url points to an internal address (loopback, private, link-local or reserved)")
        return
    if "." not in host or host == "localhost" or host.endswith(INTERNAL_SUFFIXES):
        raise AddressRefused("callback_url names an internal host")


def resolve_checked(url: str, resolver: Resolver | None = None) -> tuple[str, str, int]:
    """(address to connect to, host name, port) for a delivery, after the checks above and on
    every address the name resolves to at this moment. Raises AddressRefused."""
    check_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        return str(literal), host, port
    try:
        addresses = (resolver or system_resolver)(host, port)
    except (OSError, UnicodeError):
        raise AddressRefused("callback host does not resolve") from None
    if not addresses:
        raise AddressRefused("callback host does not resolve")
    if not host_allowed(host) and not all(address_allowed(address) for address in addresses):
        # One internal answer is enough to refuse: a name that resolves both ways is a probe.
        raise AddressRefused("callback host resolves to an internal address")
    return addresses[0].split("%", 1)[0], host, port
