"""Who an ASGI request speaks for before Django handles it: the account of its session cookie or
API token. The upload guard (webapp.limits) lets only an account hold upload memory."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY


async def account_of(scope: Any) -> str | None:
    """The user id behind the request's API token or session cookie, or None. The view checks
    them in full later (expiry, password changes); this only decides who may send a big body."""
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization[:6].lower() == "token ":
        return await _token_user(authorization[6:].strip())
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    except CookieError:
        return None
    session = cookies.get(settings.SESSION_COOKIE_NAME)
    return await _session_user(session.value) if session is not None else None


def _session_user_now(key: str) -> str | None:
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
    user_id = store.get(SESSION_KEY)
    return str(user_id) if user_id else None


def _token_user_now(key: str) -> str | None:
    from rest_framework.authtoken.models import Token

    user_id = Token.objects.filter(key=key).values_list("user_id", flat=True).first()
    return str(user_id) if user_id is not None else None


# in the thread pool, not the one thread the pages share; database connections closed after
_session_user = database_sync_to_async(_session_user_now, thread_sensitive=False)
_token_user = database_sync_to_async(_token_user_now, thread_sensitive=False)
