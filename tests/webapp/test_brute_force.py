"""Password guessing: the login page, the admin and the API token endpoint lock out one
(username, client address) pair after VEIL_LOGIN_FAILURE_LIMIT wrong passwords, while the
person themself still gets in from their own address; the token endpoint never hands back a
token it issued before."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from .factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

ATTACKER, GRANDMA = "203.0.113.7", "198.51.100.20"
LOGIN, ADMIN_LOGIN, TOKEN = reverse("accounts:login"), reverse("admin:login"), reverse("api:obtain-token")


def guess(client: Client, url: str, username: str, password: str, address: str) -> Any:
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_login_page_locks_out_a_guesser_but_not_the_account(client: Client) -> None:
    grandma = UserFactory(username="grandma")
    for _ in range(settings.VEIL_LOGIN_FAILURE_LIMIT - 1):
        wrong = guess(client, LOGIN, "grandma", "letmein", ATTACKER)
        assert wrong.status_code == 200 and "correct username and password" in wrong.content.decode()

    last = guess(client, LOGIN, "grandma", "letmein", ATTACKER)
    assert last.status_code == 429 and "Too many tries" in last.content.decode()

    # even the right password is refused from the guesser's address, with a page, not a traceback
    refused = guess(client, LOGIN, "grandma", PASSWORD, ATTACKER)
    page = refused.content.decode()
    assert refused.status_code == 429 and refused["Retry-After"] == str(settings.VEIL_LOGIN_COOLOFF_MINUTES * 60)
    assert "Too many tries" in page and "grandma" in page and f"{settings.VEIL_LOGIN_COOLOFF_MINUTES} minutes" in page
    assert "_auth_user_id" not in client.session

    # Grandma, at home, logs in as usual
    at_home = Client()
    welcome = guess(at_home, LOGIN, "grandma", PASSWORD, GRANDMA)
    assert welcome.status_code == 302 and welcome.url == reverse("albums:list")
    assert at_home.session["_auth_user_id"] == str(grandma.pk)


def test_a_right_password_before_the_limit_starts_the_count_again(client: Client) -> None:
    UserFactory(username="grandma")
    for _ in range(settings.VEIL_LOGIN_FAILURE_LIMIT - 1):
        guess(client, LOGIN, "grandma", "typo", GRANDMA)
    assert guess(client, LOGIN, "grandma", PASSWORD, GRANDMA).status_code == 302
    client.post(reverse("accounts:logout"), REMOTE_ADDR=GRANDMA)

    # a later typo is the first of a new count, not the one that locks her out
    assert guess(client, LOGIN, "grandma", "typo", GRANDMA).status_code == 200
    assert guess(client, LOGIN, "grandma", PASSWORD, GRANDMA).status_code == 302


def test_the_admin_login_locks_out_a_guesser_but_not_the_operator(client: Client) -> None:
    UserFactory(username="operator", is_staff=True, is_superuser=True)
    for _ in range(settings.VEIL_LOGIN_FAILURE_LIMIT):
        guess(client, ADMIN_LOGIN, "operator", "hunter2", ATTACKER)

    refused = guess(client, ADMIN_LOGIN, "operator", PASSWORD, ATTACKER)
    assert refused.status_code == 429 and "Too many tries" in refused.content.decode()
    assert client.get(reverse("admin:index"), REMOTE_ADDR=ATTACKER).status_code == 302  # still not in

    operator = Client()
    signed_in = operator.post(
        ADMIN_LOGIN, {"username": "operator", "password": PASSWORD, "next": "/admin/"}, REMOTE_ADDR=GRANDMA
    )
    assert signed_in.status_code == 302
    assert operator.get(reverse("admin:index"), REMOTE_ADDR=GRANDMA).status_code == 200


def test_the_token_endpoint_answers_a_guesser_with_429_json_and_still_serves_the_owner() -> None:
    UserFactory(username="grandma")
    script = APIClient()
    for _ in range(settings.VEIL_LOGIN_FAILURE_LIMIT - 1):
        assert guess(script, TOKEN, "grandma", "letmein", ATTACKER).status_code == 400

    for password in ("letmein", PASSWORD):  # the last wrong one locks; the right one is refused too
        refused = guess(script, TOKEN, "grandma", password, ATTACKER)
        assert refused.status_code == 429 and refused["Content-Type"] == "application/json"
        assert "Too many wrong passwords" in refused.json()["detail"]
        assert refused["Retry-After"] == str(settings.VEIL_LOGIN_COOLOFF_MINUTES * 60)
    assert not Token.objects.exists()

    from_home = guess(APIClient(), TOKEN, "grandma", PASSWORD, GRANDMA)
    assert from_home.status_code == 200 and from_home.json()["token"] == Token.objects.get().key


def test_the_token_endpoint_limits_requests_per_address_whatever_the_username(settings: Any) -> None:
    settings.VEIL_TOKEN_RATE = "3/hour"
    UserFactory(username="grandma")
    script = APIClient()
    for name in ("alice", "bob", "carol"):
        assert guess(script, TOKEN, name, "letmein", ATTACKER).status_code == 400

    throttled = guess(script, TOKEN, "grandma", PASSWORD, ATTACKER)
    assert throttled.status_code == 429 and "throttled" in throttled.json()["detail"]
    assert int(throttled["Retry-After"]) > 0
    assert guess(APIClient(), TOKEN, "grandma", PASSWORD, GRANDMA).status_code == 200


def test_the_token_endpoint_counts_an_ipv6_client_by_its_64(settings: Any) -> None:
    settings.VEIL_TOKEN_RATE = "2/hour"
    UserFactory(username="grandma")
    home = [f"2001:db8:1:2::{n}" for n in range(1, 4)]  # three addresses of one /64
    answers = [guess(APIClient(), TOKEN, "grandma", "letmein", address).status_code for address in home]
    assert answers == [400, 400, 429]
    assert guess(APIClient(), TOKEN, "grandma", PASSWORD, "2001:db8:1:3::1").status_code == 200


def test_each_token_request_makes_a_new_token_and_the_old_one_stops_working() -> None:
    user = UserFactory()
    keys = []
    for _ in range(2):
        answer = guess(APIClient(), TOKEN, user.username, PASSWORD, GRANDMA)
        assert answer.status_code == 200 and "no-store" in answer["Cache-Control"]
        keys.append(answer.json()["token"])
    old, new = keys
    assert old != new and list(Token.objects.values_list("key", flat=True)) == [new]

    def albums_with(key: str) -> int:
        script = APIClient()
        script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return script.get("/api/albums/").status_code

    assert albums_with(old) == 401
    assert albums_with(new) == 200


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same home, the same allowance
        ("::ffff:198.51.100.4", "198.51.100.4"),
        (None, "unknown"),
    ],
)
def test_limits_count_an_ipv6_client_by_its_64(peer: str | None, counted_as: str) -> None:
    from webapp.addresses import client_key

    assert client_key(peer) == counted_as
