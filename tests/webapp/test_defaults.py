"""Safe defaults: production settings unless development is asked for, a real SECRET_KEY, Veil's
own error pages, TLS headers behind a TLS proxy, and passphrases held to the password rules."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.helpers import ROOT
from webapp.albums.models import Album

from .factories import PASSPHRASE, AlbumFactory

pytestmark = pytest.mark.django_db


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    unset = {"DEBUG", "SECRET_KEY", "BEHIND_TLS_PROXY", "FORWARDED_ALLOW_IPS"}
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_without_a_secret_key_veil_refuses_to_start_in_production() -> None:
    refused = _manage("check")
    assert refused.returncode != 0 and "SECRET_KEY is not set" in refused.stderr
    assert _manage("check", DEBUG="1").returncode == 0, "development runs with its own key"
    public = _manage("check", SECRET_KEY="veil-development-only-secret-key-do-not-use-in-production")
    assert public.returncode != 0 and "the development key, which is public" in public.stderr
    for weak in ("short", "a" * 60):
        refused = _manage("check", SECRET_KEY=weak)
        assert refused.returncode != 0 and "too short or too plain" in refused.stderr


def test_the_documented_production_settings_pass_the_deploy_check() -> None:
    production = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BEHIND_TLS_PROXY": "1",
        "FORWARDED_ALLOW_IPS": "172.17.0.1",
        "ALLOWED_HOSTS": "photos.example.org",
    }
    checked = _manage("check", "--deploy", "--fail-level", "WARNING", **production)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout


@pytest.mark.parametrize("proxies", ["", "*"])
def test_behind_a_tls_proxy_veil_refuses_to_start_unless_it_can_tell_clients_apart(proxies: str) -> None:
    refused = _manage("check", SECRET_KEY=secrets.token_urlsafe(50), BEHIND_TLS_PROXY="1", FORWARDED_ALLOW_IPS=proxies)
    assert refused.returncode != 0 and "BEHIND_TLS_PROXY=1 needs FORWARDED_ALLOW_IPS" in refused.stderr


def test_a_stranger_sees_veils_own_not_found_page(client: Client) -> None:
    page = client.get("/no/such/page/")
    text = page.content.decode()
    assert page.status_code == 404 and "Nothing here" in text
    assert "URLconf" not in text and "urlpatterns" not in text.lower(), "no technical page"


@pytest.mark.parametrize("weak", ["12345678", "password1", "qwertyuiop"])
def test_a_weak_album_passphrase_or_recipient_password_is_refused(owner_client: Client, user: Any, weak: str) -> None:
    made = owner_client.post(reverse("albums:create"), {"name": "Lake", "passphrase": weak, "passphrase_again": weak})
    assert made.status_code == 200 and "This password is too common" in made.content.decode()
    assert not Album.objects.exists()
    api = APIClient()
    api.force_authenticate(user)
    assert api.post("/api/albums/", {"name": "Lake", "passphrase": weak}).status_code == 400
    album = AlbumFactory(owner=user)
    form = {"name": "Tom", "password_choice": "choose", "password": weak, "owner_passphrase": PASSPHRASE}
    added = owner_client.post(reverse("sharing:recipient-add", args=[album.pk]), form)
    assert added.status_code == 400 and "This password is too common" in added.content.decode()
    assert not album.key_slots.filter(label="Tom").exists()


def test_every_page_carries_a_content_security_policy_its_own_markup_keeps(owner_client: Client, user: Any) -> None:
    import re

    album = AlbumFactory(owner=user)
    pages = [
        reverse("albums:list"),
        album.get_absolute_url(),
        reverse("sharing:album", args=[album.pk]),
        album.share_url(),
        "/api/docs/",
    ]
    for url in pages:
        response = owner_client.get(url)
        policy = response.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, url
        html = response.content.decode()
        # scripts only from files: an inline one would be blocked by the policy
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert "javascript:" not in html and not re.search(r"\son[a-z]+=", html), url
