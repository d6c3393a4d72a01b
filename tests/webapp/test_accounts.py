from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from .factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_sign_up_creates_the_account_and_logs_in(client: Client) -> None:
    response = client.post(
        reverse("accounts:signup"),
        {"username": "grandma", "password1": "a quiet lake at dawn", "password2": "a quiet lake at dawn"},
    )

    assert response.status_code == 302 and response.url == reverse("albums:list")
    assert get_user_model().objects.filter(username="grandma").exists()
    page = client.get(reverse("albums:list"))
    assert page.status_code == 200 and "grandma" in page.content.decode()


def test_sign_up_explains_a_weak_password(client: Client) -> None:
    response = client.post(reverse("accounts:signup"), {"username": "bob", "password1": "1234", "password2": "1234"})

    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not get_user_model().objects.filter(username="bob").exists()


def test_log_in_and_log_out(client: Client) -> None:
    user = UserFactory()

    bad = client.post(reverse("accounts:login"), {"username": user.username, "password": "nope"})
    assert bad.status_code == 200 and "correct username and password" in bad.content.decode()

    good = client.post(reverse("accounts:login"), {"username": user.username, "password": PASSWORD})
    assert good.status_code == 302 and good.url == reverse("albums:list")
    assert client.get(reverse("albums:list")).status_code == 200

    out = client.post(reverse("accounts:logout"))
    assert out.status_code == 302
    assert client.get(reverse("albums:list")).status_code == 302  # back to the login page


def test_pages_need_a_login(client: Client) -> None:
    response = client.get(reverse("albums:list"))
    assert response.status_code == 302 and response.url.startswith(reverse("accounts:login"))


@pytest.mark.django_db(transaction=True)
def test_an_asgi_request_is_known_by_its_session_or_its_token_and_nothing_else() -> None:
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from rest_framework.authtoken.models import Token

    from webapp.accounts.scopes import account_of

    user = UserFactory()
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    token = Token.objects.create(user=user)

    def who(*headers: tuple[bytes, bytes]) -> str | None:
        return async_to_sync(account_of)({"type": "http", "headers": list(headers)})

    cookie = f"csrftoken=abc; {settings.SESSION_COOKIE_NAME}={session}".encode()
    assert who((b"cookie", cookie)) == str(user.pk)
    assert who((b"authorization", f"Token {token.key}".encode())) == str(user.pk)
    assert who() is None
    assert who((b"cookie", f"{settings.SESSION_COOKIE_NAME}=made-up".encode())) is None
    assert who((b"authorization", b"Token made-up")) is None
