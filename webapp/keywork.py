"""Allowances for the expensive work behind a password: Argon2id (≈ 0.2 s of a core and 64 MiB
each time) runs when an album is made, a recipient is added, the album key is rotated, an
account is signed up for, and an unlock is tried. Guess limits (webapp.sharing.tries, axes)
count wrong passwords only; these count every request, right passwords included, so that one
account or one address looping over them cannot keep the web processes' cores busy.

Counted with django-ratelimit in the shared Redis cache, in fixed windows:

* ``VEIL_KEY_WORK_RATE`` (30/h) per account: album creation, adding a recipient, key rotation,
  on the pages and through the API; and ``VEIL_KEY_WORK_ADDRESS_RATE`` (60/h) for all the
  accounts of one client address together (fresh accounts from one address share it);
* ``VEIL_SIGNUP_RATE`` (5/h) per client address: sign-ups;
* ``VEIL_LOGIN_RATE`` (60/h) per client address: login attempts, right or wrong, on the login
  page and the admin's (Django hashes a password even for a username that does not exist, and
  axes counts per username, so many usernames from one address would otherwise be unlimited);
* ``VEIL_UNLOCK_RATE`` (60/h) per client address: unlock attempts on the websockets.

Allowances bound the work per hour; :func:`cipher_worker.keys.hashing_for` shares the cores
fairly at any moment: key work runs its Argon2 as its account's, address's and network's, so a
client that sends many requests at once waits behind its own, not everyone else behind it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, cast

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from django_ratelimit.core import is_ratelimited

from cipher_worker import keys
from cipher_worker.turns import Busy
from webapp.addresses import network_key, request_address
from webapp.texts import BUSY, TEMPORARILY_UNAVAILABLE
from webapp.unavailable import unavailable_response

log = logging.getLogger(__name__)

Work = Literal["key-work", "address-key-work", "signup", "login", "unlock"]
View = TypeVar("View", bound=Callable[..., HttpResponseBase])

TOO_MUCH = "You have done this many times in a short while; please wait a few minutes and try again."


class TooMuchWork(Exception):
    """Over the allowance (``unavailable`` when the counter itself could not be reached)."""

    def __init__(self, message: str = TOO_MUCH, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def _rate(work: Work) -> str:
    return {
        "key-work": settings.VEIL_KEY_WORK_RATE,
        "address-key-work": settings.VEIL_KEY_WORK_ADDRESS_RATE,
        "signup": settings.VEIL_SIGNUP_RATE,
        "login": settings.VEIL_LOGIN_RATE,
        "unlock": settings.VEIL_UNLOCK_RATE,
    }[work]


def spend(work: Work, who: str, request: HttpRequest | None = None) -> None:
    """Take one from ``who``'s allowance for ``work`` (an account id or a client address);
    TooMuchWork if none is left, or if Redis does not answer (the work is refused then too)."""
    try:
        limited = is_ratelimited(
            request or HttpRequest(),
            group=f"veil.{work}",
            key=lambda _group, _request: who,
            rate=_rate(work),
            increment=True,
        )
    except redis.RedisError:
        log.exception("the %s allowance could not be counted", work)
        raise TooMuchWork(TEMPORARILY_UNAVAILABLE, unavailable=True) from None
    if limited:
        raise TooMuchWork()


def account(request: HttpRequest) -> str:
    return f"account:{request.user.pk}"


@contextlib.contextmanager
def key_work(request: HttpRequest) -> Iterator[None]:
    """Spend one of the account's and one of its address's key work, then run the block's Argon2
    as theirs and the address's network's (fair turns); TooMuchWork over an allowance, and Busy
    (cipher_worker.turns) from the block when this account already has many hashes waiting."""
    address = request_address(request)
    spend("key-work", account(request), request)
    spend("address-key-work", address, request)
    with keys.hashing_for(account(request), f"address:{address}", f"net:{network_key(address)}"):
        yield


def spends(work: Work) -> Callable[[View], View]:
    """A view whose POSTs each take one from the allowance (key work: per account and per client
    address, :func:`key_work`; the rest per client address); over it, or busy, a "please wait"
    page with 429 (503 when Redis is away)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != "POST":
                return view(request, *args, **kwargs)
            try:
                if work == "key-work":
                    with key_work(request):
                        return view(request, *args, **kwargs)
                spend(work, request_address(request), request)
            except TooMuchWork as exc:
                if exc.unavailable:
                    return unavailable_response(request)
                return render(request, "429.html", {"message": str(exc)}, status=429)
            except Busy:
                return render(request, "429.html", {"message": BUSY}, status=429)
            return view(request, *args, **kwargs)

        return cast(View, guarded)

    return decorate
