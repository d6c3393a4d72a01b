"""Allowances for Argon2 work (webapp.keywork): right passwords count too, so a loop of
album creations, recipient additions, sign-ups or unlocks cannot keep the cores busy; one
account or address over its allowance leaves everyone else untouched."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from webapp.albums.models import Album
from webapp.keywork import TOO_MUCH
from webapp.sharing import unlocking
from webapp.texts import BUSY

from .factories import PASSPHRASE, AlbumFactory, UserFactory

NEW_ALBUM = {"name": "Summer", "passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE}


@pytest.fixture(autouse=True)
def small_allowances(settings: Any) -> None:
    settings.VEIL_KEY_WORK_RATE = settings.VEIL_SIGNUP_RATE = settings.VEIL_UNLOCK_RATE = "2/hour"
    settings.VEIL_LOGIN_RATE = "2/hour"


def test_an_account_makes_albums_up_to_its_allowance_and_others_are_untouched(owner_client: Client) -> None:
    url = reverse("albums:create")
    assert [owner_client.post(url, NEW_ALBUM).status_code for _ in range(2)] == [302, 302]

    refused = owner_client.post(url, NEW_ALBUM)

    assert refused.status_code == 429 and TOO_MUCH in refused.content.decode()
    assert Album.objects.count() == 2
    assert owner_client.get(url).status_code == 200  # looking at the form costs nothing
    someone_else = Client()
    someone_else.force_login(UserFactory())
    assert someone_else.post(url, NEW_ALBUM).status_code == 302


def test_adding_recipients_with_the_right_passphrase_spends_the_same_allowance(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    url = reverse("sharing:recipient-add", args=[album.pk])

    def add(name: str) -> int:
        form = {"name": name, "password_choice": "generate", "owner_passphrase": PASSPHRASE}
        return owner_client.post(url, form).status_code

    assert [add("Ann"), add("Ben"), add("Cat")] == [200, 200, 429]
    assert list(album.key_slots.values_list("label", flat=True)) == ["owner", "Ann", "Ben"]
    api = APIClient()
    api.force_authenticate(user)
    refused = api.post("/api/albums/", {"name": "More", "passphrase": PASSPHRASE}, format="json")
    assert refused.status_code == 429 and refused.json()["detail"] == TOO_MUCH


def test_sign_ups_from_one_address_are_limited_and_another_address_signs_up(db: None) -> None:
    def sign_up(name: str, address: str) -> int:
        form = {"username": name, "password1": "a long family passphrase", "password2": "a long family passphrase"}
        return Client(REMOTE_ADDR=address).post(reverse("accounts:signup"), form).status_code

    assert [sign_up(f"user{n}", "198.51.100.4") for n in range(3)] == [302, 302, 429]
    assert sign_up("user3", "198.51.100.5") == 302


def test_login_attempts_from_one_address_are_limited_whatever_the_username(user: Any) -> None:
    def log_in(path: str, name: str, address: str) -> int:
        return Client(REMOTE_ADDR=address).post(path, {"username": name, "password": "not it at all"}).status_code

    # every attempt costs a password hash, even for a username nobody has: axes, counting per
    # username, would let one address try name after name
    assert [log_in("/accounts/login/", f"nobody{n}", "198.51.100.9") for n in range(2)] == [200, 200]
    assert log_in("/admin/login/", "nobody2", "198.51.100.9") == 429
    assert log_in("/accounts/login/", user.username, "198.51.100.10") == 200  # another address still tries


def test_unlocks_from_one_address_count_right_passwords_too(db: None) -> None:
    from .test_sharing import GRANDMA, attempt, done_photo, recipient

    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)

    assert [type(attempt(album, slot, GRANDMA, "192.0.2.7")).__name__ for _ in range(2)] == ["Started", "Started"]
    refused = attempt(album, slot, GRANDMA, "192.0.2.7")
    assert isinstance(refused, unlocking.Refused) and (refused.code, refused.message) == ("rate_limited", TOO_MUCH)
    assert isinstance(attempt(album, slot, GRANDMA, "192.0.2.8"), unlocking.Started)  # Grandma's own connection


def test_fresh_accounts_from_one_address_share_its_key_work_allowance(db: None, settings: Any) -> None:
    settings.VEIL_KEY_WORK_RATE, settings.VEIL_KEY_WORK_ADDRESS_RATE = "10/hour", "3/hour"
    url = reverse("albums:create")

    def create(address: str) -> int:
        client = Client(REMOTE_ADDR=address)
        client.force_login(UserFactory())  # a new account each time, as a Sybil flood would make
        return client.post(url, NEW_ALBUM).status_code

    assert [create("198.51.100.20") for _ in range(4)] == [302, 302, 302, 429]
    assert create("198.51.100.21") == 302  # another household is untouched


class HeldTurns:
    """Veil's Argon2 turns replaced by one turn with room for one waiter, and both taken by
    ``client``'s other requests (an account, or an address), as a burst of them would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
        from cipher_worker import keys
        from cipher_worker.turns import FairTurns

        self.turns = FairTurns(1, max_waiting=1)
        monkeypatch.setattr(keys, "_argon2_turns", self.turns)
        self._release = threading.Event()
        names = (client,)
        self._threads = [threading.Thread(target=self._hold, args=(names,), daemon=True) for _ in range(2)]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 5
        while not (self.turns._free == 0 and self.turns._waiters):
            assert time.monotonic() < deadline
            time.sleep(0.005)

    def _hold(self, names: tuple[str, ...]) -> None:
        with self.turns.turn(names):
            self._release.wait(10)

    def release(self) -> None:
        self._release.set()
        for thread in self._threads:
            thread.join(5)


def test_a_burst_of_key_work_from_one_account_is_told_it_is_busy_and_nothing_is_made(
    owner_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.VEIL_KEY_WORK_RATE = "10/hour"  # a refusal as busy spends the allowance too
    held = HeldTurns(monkeypatch, f"account:{user.pk}")
    try:
        refused = owner_client.post(reverse("albums:create"), NEW_ALBUM)
        api = APIClient()
        api.force_authenticate(user)
        api_refused = api.post("/api/albums/", {"name": "More", "passphrase": PASSPHRASE}, format="json")
    finally:
        held.release()
    assert refused.status_code == 429 and BUSY in refused.content.decode()
    assert api_refused.status_code == 429 and api_refused.json()["detail"] == BUSY
    assert not Album.objects.exists()
    assert owner_client.post(reverse("albums:create"), NEW_ALBUM).status_code == 302  # once the burst is over


def test_an_unlock_that_waited_out_its_turn_is_told_busy_and_keeps_its_try(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cipher_worker import keys
    from webapp.sharing.tries import limiter

    from .test_sharing import GRANDMA, attempt, done_photo, recipient

    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)
    held = HeldTurns(monkeypatch, "address:192.0.2.30")
    monkeypatch.setattr(keys, "ARGON2_PATIENCE", 0.1)  # unlocks are never refused for waiting, only for waiting long
    try:
        outcome = attempt(album, slot, GRANDMA, "192.0.2.30")
    finally:
        held.release()
    assert isinstance(outcome, unlocking.Refused) and (outcome.code, outcome.message) == ("busy", BUSY)
    tries = limiter()
    left = [tries.reserve(slot.pk, "192.0.2.30").allowed for _ in range(tries.per_client + 1)]
    assert left == [True] * tries.per_client + [False]  # every try is still there


def test_key_work_takes_turns_as_its_account_and_address_and_unlocks_go_first(
    owner_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from cipher_worker import keys
    from cipher_worker.turns import FairTurns

    from .test_sharing import GRANDMA, attempt, done_photo, recipient

    asked: list[tuple[tuple[str, ...], bool]] = []

    class Watched(FairTurns):
        def turn(self, names: Any = (), *, urgent: bool = False, timeout: float | None = None) -> Any:
            asked.append((tuple(names), urgent))
            return contextlib.nullcontext()

    monkeypatch.setattr(keys, "_argon2_turns", Watched(1))
    assert owner_client.post(reverse("albums:create"), NEW_ALBUM).status_code == 302
    assert asked == [((f"account:{user.pk}", "address:127.0.0.1", "net:127.0.0.0/24"), False)]
    album = Album.objects.get()
    done_photo(album)
    slot = recipient(album)
    asked.clear()
    outcome = attempt(album, slot, GRANDMA, "192.0.2.40")
    assert isinstance(outcome, unlocking.Started)
    # fine to coarse: a flood spread over many addresses of one network still carries its load
    names = ("address:192.0.2.40", "net:192.0.2.0/24")
    assert asked == [(names, True)]


def test_web_processes_share_the_cores_for_argon2_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from webapp.processes import argon2_share

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert [argon2_share(n, {}) for n in (1, 2, 4, 8)] == ["4", "2", "1", "1"]
    assert argon2_share(2, {"VEIL_ARGON2_AT_ONCE": "3"}) == "3"


def test_a_recipient_add_told_busy_keeps_the_owners_passphrase_tries(
    owner_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Review round 9: five refusals as busy left the owner locked out of sharing for 15 minutes."""
    from cipher_worker import keys
    from webapp.sharing.recipients import owner_slot
    from webapp.sharing.tries import limiter

    settings.VEIL_KEY_WORK_RATE = settings.VEIL_KEY_WORK_ADDRESS_RATE = "100/hour"
    album = AlbumFactory(owner=user)
    url = reverse("sharing:recipient-add", args=[album.pk])
    form = {"name": "Ann", "password_choice": "generate", "owner_passphrase": PASSPHRASE}
    tries = limiter()
    held = HeldTurns(monkeypatch, "address:someone-else")
    monkeypatch.setattr(keys, "ARGON2_PATIENCE", 0.05)
    try:
        answers = [owner_client.post(url, form) for _ in range(tries.per_client + 1)]
    finally:
        held.release()
    assert all(a.status_code == 429 and BUSY in a.content.decode() for a in answers)
    slot = owner_slot(album)
    assert [tries.reserve(slot.pk, "127.0.0.1").allowed for _ in range(tries.per_client)] == [True] * tries.per_client
