"""Who is asking: the client address every guessing limit counts by (logins, tokens, key tries).

It is the connection's peer, which uvicorn (``--proxy-headers``) sets from X-Forwarded-For only
when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``); never a header anyone can send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest


def request_address(request: HttpRequest) -> str:
    """Over HTTP (also axes' AXES_CLIENT_IP_CALLABLE)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def scope_address(scope: Mapping[str, Any]) -> str:
    """On a websocket: the same address, as the ASGI scope has it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
