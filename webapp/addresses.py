"""Who is asking: the client address every guessing limit counts by (logins, tokens, key tries).

It is the connection's peer, which uvicorn (``--proxy-headers``) sets from X-Forwarded-For only
when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``); never a header anyone can send. An
IPv6 address stands for its /64: one host or home is handed a whole /64, and counting each of
its 2⁶⁴ addresses apart would give it as many allowances.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

UNKNOWN = "unknown"


def request_address(request: HttpRequest) -> str:
    """Over HTTP (also axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_key(request.META.get("REMOTE_ADDR"))


def axes_address(request: HttpRequest) -> str:
    """:func:`request_address` for axes, which stores it in an IP address column: an IPv6 /64 as
    its first address, and no address as 0.0.0.0 (Postgres takes neither "/64" nor "unknown")."""
    address = request_address(request)
    return "0.0.0.0" if address == UNKNOWN else address.split("/", 1)[0]


def scope_address(scope: Mapping[str, Any]) -> str:
    """On a websocket: the same address, as the ASGI scope has it."""
    client = scope.get("client")
    return client_key(client[0] if client else None)


def client_key(address: object) -> str:
    """ "203.0.113.7" as it is; "2001:db8:1:2::5" as "2001:db8:1:2::/64"; "unknown" for none."""
    if not address:
        return UNKNOWN
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        return str(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def network_key(client: str) -> str:
    """The network a :func:`client_key` belongs to, for limits that one owner of many addresses
    must not multiply: an IPv4 /24 ("203.0.113.0/24"), an IPv6 /48 (what a site is handed);
    ``client`` itself when it is no address."""
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return client
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)
