"""Sharing an album: recipients, the share link and its pages, downloads, the unlock log,
tries limited per key slot, and rotating the album key. The websocket is in
test_sharing_ws.py; the real worker in test_sharing_integration.py."""

from __future__ import annotations

import io
import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from cipher_worker import carriers, envelope, keys
from cipher_worker.errors import NoEnvelope, WrongKey
from webapp.albums.models import Album, AlbumKeySlot, Photo
from webapp.sharing import recipients, tries, unlocking
from webapp.sharing.models import UnlockAttempt
from webapp.sharing.passphrases import generate_passphrase

from .factories import PASSPHRASE, AlbumFactory, PhotoFactory, UserFactory

pytestmark = pytest.mark.django_db

GRANDMA = "grandma's garden 1972"


def jpeg(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (120, 90, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG")
    return out.getvalue()


def done_photo(album: Album, *, faces: int = 1) -> tuple[Photo, bytes]:
    """A finished photo with stored files and a genuine sealed envelope (no faces in it: the
    model is not needed to test who may open it); returns it with its content key."""
    content_key = os.urandom(32)
    unsigned = envelope.Envelope(
        codec_id="test",
        codec_fingerprint=bytes(16),
        fidelity="exact",
        sealed_content_key=keys.seal_content_key(content_key, album.public_key_bytes),
        nonce=os.urandom(16),
        image_size=(64, 48),
        faces=(),
    )
    sealed = envelope.seal_envelope(unsigned, content_key).to_bytes()
    base = f"photos/{album.pk}/{uuid.uuid4().hex}"
    photo = PhotoFactory(
        album=album,
        status=Photo.Status.DONE,
        format="JPEG",
        width=64,
        height=48,
        faces=faces,
        envelope=sealed,
        image=default_storage.save(base + ".jpg", ContentFile(jpeg())),
        thumbnail=default_storage.save(base + ".thumb.jpg", ContentFile(jpeg(32, 24))),
    )
    return photo, content_key


OWNERS_ADDRESS = "10.0.0.1"


def recipient(album: Album, name: str = "Grandma", password: str = GRANDMA, **extra: Any) -> AlbumKeySlot:
    return recipients.add_recipient(
        album, owner_passphrase=PASSPHRASE, client=OWNERS_ADDRESS, name=name, password=password, **extra
    )


def attempt(
    album: Album,
    slot: AlbumKeySlot | int,
    password: str,
    client: str = "192.0.2.7",
    via: str = UnlockAttempt.Via.SHARE_LINK,
) -> unlocking.Started | unlocking.Refused:
    return unlocking.begin_unlock(
        album,
        slot if isinstance(slot, int) else slot.pk,
        password,
        client=client,
        session_id=uuid.uuid4().hex,
        session_key=os.urandom(32),
        reply_channel="test.channel",
        via=via,
    )


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- recipients ----------------------------------------------------------------------------


def test_adding_a_recipient_needs_the_album_passphrase(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    url = reverse("sharing:recipient-add", args=[album.pk])
    form = {"name": "Grandma", "password_choice": "choose", "password": GRANDMA, "owner_passphrase": "not it"}

    refused = owner_client.post(url, form)

    assert refused.status_code == 400
    assert "That is not this album&#x27;s passphrase." in refused.content.decode()
    assert not album.key_slots.filter(kind="recipient").exists()

    added = owner_client.post(url, {**form, "owner_passphrase": PASSPHRASE})

    assert added.status_code == 302
    slot = album.key_slots.get(label="Grandma")
    assert slot.kind == "recipient" and slot.expires_at is None
    page = owner_client.get(added.url).content.decode()
    assert "Grandma can now unlock this album with the password you chose." in page
    assert GRANDMA not in page


def test_a_recipient_slot_opens_with_their_password_only(user: Any) -> None:
    album = AlbumFactory(owner=user)
    owner_private = album.key_slots.get(kind="owner").unwrap(PASSPHRASE)

    slot = recipient(album)

    assert slot.unwrap(GRANDMA) == owner_private
    assert keys.public_key_from_private(slot.unwrap(GRANDMA)) == album.public_key_bytes
    with pytest.raises(WrongKey):
        slot.unwrap(PASSPHRASE)
    with pytest.raises(WrongKey):
        slot.unwrap("grandma's garden 1973")
    stored = bytes(AlbumKeySlot.objects.get(pk=slot.pk).slot)
    assert GRANDMA.encode() not in stored and owner_private not in stored


def test_a_generated_password_is_shown_once_and_opens_the_new_slot(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    response = owner_client.post(
        reverse("sharing:recipient-add", args=[album.pk]),
        {"name": "Uncle Tom", "password_choice": "generate", "owner_passphrase": PASSPHRASE, "expires_on": ""},
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    start = page.index('<code id="recipient-password">') + len('<code id="recipient-password">')
    password = page[start : page.index("</code>", start)]
    assert len(password.split("-")) == 6 and "shown only this once" in page
    assert album.key_slots.get(label="Uncle Tom").unwrap(password)
    assert password not in owner_client.get(reverse("sharing:album", args=[album.pk])).content.decode()


def test_generated_passphrases_are_words_and_differ() -> None:
    made = {generate_passphrase() for _ in range(50)}
    assert len(made) == 50
    assert all(word.isalpha() and word.islower() for p in made for word in p.split("-"))


def test_recipient_names_are_unique_and_owner_is_reserved(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    recipient(album, "Grandma")
    url = reverse("sharing:recipient-add", args=[album.pk])
    form = {"password_choice": "generate", "owner_passphrase": PASSPHRASE}

    twice = owner_client.post(url, {**form, "name": "grandma"}).content.decode()
    owner = owner_client.post(url, {**form, "name": "Owner"}).content.decode()
    no_password = owner_client.post(url, {**form, "name": "Tom", "password_choice": "choose"}).content.decode()

    assert "Someone of that name can already unlock this album." in twice
    assert "is the album owner&#x27;s own name here" in owner
    assert "Type the password you want them to use." in no_password
    assert album.key_slots.count() == 2


def test_the_owner_sees_recipients_and_revokes_one(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album, "Grandma", expires_at=timezone.now() + timedelta(days=3))
    AlbumKeySlot.objects.filter(pk=slot.pk).update(last_unlocked_at=timezone.now())
    page = owner_client.get(reverse("sharing:album", args=[album.pk])).content.decode()
    assert "Grandma" in page and "(you, with the album passphrase)" in page
    assert (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%d") in page

    response = owner_client.post(reverse("sharing:recipient-revoke", args=[album.pk, slot.pk]))

    assert response.status_code == 302
    assert not AlbumKeySlot.objects.filter(pk=slot.pk).exists()
    assert "Grandma can no longer unlock this album." in owner_client.get(response.url).content.decode()
    owner_slot = album.key_slots.get(kind="owner")
    assert owner_client.post(reverse("sharing:recipient-revoke", args=[album.pk, owner_slot.pk])).status_code == 302
    assert AlbumKeySlot.objects.filter(pk=owner_slot.pk).exists()  # the owner's key cannot be removed


def test_a_revoked_recipients_password_then_fails(user: Any) -> None:
    album = AlbumFactory(owner=user)
    done_photo(album)
    slot = recipient(album)
    assert isinstance(attempt(album, slot, GRANDMA), unlocking.Started)

    slot_id = slot.pk
    recipients.revoke_recipient(slot)
    refused = attempt(album, slot_id, GRANDMA)

    assert refused == unlocking.Refused("revoked", "This name can no longer unlock this album; ask the album's owner.")
    outcomes = list(album.unlock_attempts.order_by("created_at").values_list("outcome", "slot_label"))
    assert outcomes == [("success", "Grandma"), ("revoked", "")]


def test_an_expired_recipient_is_refused_without_checking_the_password(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album, expires_at=timezone.now() - timedelta(minutes=1))
    monkeypatch.setattr(AlbumKeySlot, "unwrap", lambda *a: pytest.fail("Argon2 ran for an expired recipient"))

    refused = attempt(album, slot, GRANDMA)

    assert isinstance(refused, unlocking.Refused) and refused.code == "expired"
    assert refused.message.startswith("Access for Grandma ended on ")
    assert refused.message.endswith("; ask the album's owner to extend it.")
    assert album.unlock_attempts.get().outcome == "expired"


def test_the_owner_sets_and_clears_an_expiry(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    url = reverse("sharing:recipient-expiry", args=[album.pk, slot.pk])
    day = timezone.localdate() + timedelta(days=10)

    owner_client.post(url, {"expires_on": day.isoformat()})
    slot.refresh_from_db()
    assert slot.expires_at is not None and timezone.localtime(slot.expires_at).date() == day + timedelta(days=1)
    assert not slot.is_expired(timezone.now() + timedelta(days=10)) and slot.is_expired(
        timezone.now() + timedelta(days=11, hours=1)
    )

    past = owner_client.post(url, {"expires_on": "2001-01-01"}, follow=True).content.decode()
    assert "Choose today or a later day." in past
    owner_client.post(url, {"expires_on": ""})
    slot.refresh_from_db()
    assert slot.expires_at is None


def test_sharing_pages_of_another_users_album_are_not_found(owner_client: Client) -> None:
    theirs = AlbumFactory(owner=UserFactory())
    slot = recipient(theirs)
    assert owner_client.get(reverse("sharing:album", args=[theirs.pk])).status_code == 404
    assert owner_client.post(reverse("sharing:recipient-revoke", args=[theirs.pk, slot.pk])).status_code == 404
    assert owner_client.post(reverse("sharing:link-rotate", args=[theirs.pk])).status_code == 404
    assert AlbumKeySlot.objects.filter(pk=slot.pk).exists()


# --- the share link --------------------------------------------------------------------------


def test_the_share_page_shows_only_anonymized_images_without_login(client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user, name="Lake house")
    photo, _ = done_photo(album)
    queued = PhotoFactory(album=album)

    page = client.get(album.share_url())

    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    html = page.content.decode()
    assert "Lake house" in html and "Show real faces" in html and "/static/unlock.js" in html
    assert f"/ws/share/{album.share_token}/" in html
    assert str(queued.pk) not in html
    # Every image on the page comes through a token-checked view, none from a media URL.
    assert reverse("sharing:share-thumbnail", args=[album.share_token, photo.pk]) in html
    assert "/media/" not in html and f'"{reverse("albums:photo-image", args=[photo.pk])}"' not in html
    image = client.get(reverse("sharing:share-image", args=[album.share_token, photo.pk]))
    assert image.status_code == 200 and body(image) == default_storage.open(photo.image.name).read()
    thumb = client.get(reverse("sharing:share-thumbnail", args=[album.share_token, photo.pk]))
    assert Image.open(io.BytesIO(body(thumb))).size == (32, 24)
    # The dialog lists who may unlock, never the owner (who unlocks on the album page).
    assert ">owner</option>" not in html
    assert "only you hold the key" not in html, "the footer speaks to the visitor, not the owner"
    assert client.get(reverse("sharing:share-image", args=[album.share_token, queued.pk])).status_code == 404


def test_a_photo_of_another_album_is_not_served_through_this_link(client: Client, user: Any) -> None:
    album, other = AlbumFactory(owner=user), AlbumFactory(owner=user)
    theirs, _ = done_photo(other)
    for name in ("share-image", "share-thumbnail", "share-download"):
        assert client.get(reverse(f"sharing:{name}", args=[album.share_token, theirs.pk])).status_code == 404
    assert client.get(reverse("sharing:share", args=["not-a-real-token-at-all"])).status_code == 404


def test_rotating_the_share_link_makes_the_old_one_404(owner_client: Client, client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    photo, _ = done_photo(album)
    old = album.share_token
    assert len(old) == 32

    response = owner_client.post(reverse("sharing:link-rotate", args=[album.pk]))

    album.refresh_from_db()
    assert response.status_code == 302 and album.share_token != old
    assert "the old one no longer works" in owner_client.get(response.url).content.decode()
    assert client.get(reverse("sharing:share", args=[old])).status_code == 404
    for name in ("share-image", "share-thumbnail", "share-download"):
        assert client.get(reverse(f"sharing:{name}", args=[old, photo.pk])).status_code == 404
        assert client.get(reverse(f"sharing:{name}", args=[album.share_token, photo.pk])).status_code == 200
    assert client.get(album.share_url()).status_code == 200


# --- downloads -------------------------------------------------------------------------------


def test_downloads_carry_the_envelope_only_when_the_owner_says_so(
    owner_client: Client, client: Client, user: Any
) -> None:
    album = AlbumFactory(owner=user)
    photo, _ = done_photo(album)
    stored = default_storage.open(photo.image.name).read()
    urls = [
        reverse("albums:photo-download", args=[photo.pk]),
        reverse("sharing:share-download", args=[album.share_token, photo.pk]),
    ]

    for url in urls:
        plain = (owner_client if url.startswith("/photos/") else client).get(url)
        assert plain.status_code == 200 and plain["Content-Disposition"].startswith("attachment;")
        assert body(plain) == stored
        with pytest.raises(NoEnvelope):
            carriers.extract(body(plain))

    settings = owner_client.post(reverse("sharing:settings", args=[album.pk]), {"downloads_include_envelope": "on"})
    assert settings.status_code == 302
    album.refresh_from_db()
    assert album.downloads_include_envelope and not album.decoy_mode

    for url in urls:
        data = body((owner_client if url.startswith("/photos/") else client).get(url))
        assert carriers.extract(data) == bytes(photo.envelope)
        assert carriers.strip(data) == stored  # the same anonymized pixels, plus the envelope
    assert default_storage.open(photo.image.name).read() == stored  # the stored file is untouched


# --- tries, the unlock log -----------------------------------------------------------------


def test_a_sixth_wrong_try_is_refused_without_running_argon2(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    album = AlbumFactory(owner=user)
    done_photo(album)
    slot = recipient(album)
    real_unwrap = AlbumKeySlot.unwrap
    runs: list[int] = []

    def counted(self: AlbumKeySlot, password: str) -> bytes:
        runs.append(self.pk)
        return real_unwrap(self, password)

    monkeypatch.setattr(AlbumKeySlot, "unwrap", counted)

    for n in range(5):
        assert attempt(album, slot, f"guess {n}") == unlocking.Refused("wrong_password", unlocking.WRONG_PASSWORD)
    sixth = attempt(album, slot, GRANDMA)  # even the right password waits now

    seventh = attempt(album, slot, "another guess")

    assert sixth == unlocking.Refused("rate_limited", "Too many tries; try again in 15 minutes.")
    assert seventh == sixth
    assert len(runs) == 5
    # Logged: every password checked, and the first refusal of the window (not a flood of them).
    outcomes = list(album.unlock_attempts.order_by("created_at").values_list("outcome", flat=True))
    assert outcomes == ["wrong_password"] * 5 + ["rate_limited"]
    # Per key slot: the owner's slot is not affected.
    owner = album.key_slots.get(kind="owner")
    assert isinstance(attempt(album, owner, PASSPHRASE, via=UnlockAttempt.Via.ALBUM_PAGE), unlocking.Started)


def test_a_success_gives_its_try_back(user: Any, fresh_redis: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    for _ in range(4):
        attempt(album, slot, "wrong")
    assert isinstance(attempt(album, slot, GRANDMA), unlocking.Started)

    assert int(fresh_redis.get(tries.PREFIX + str(slot.pk))) == 4
    assert attempt(album, slot, "wrong").code == "wrong_password"  # type: ignore[union-attr]
    assert attempt(album, slot, "wrong").code == "rate_limited"  # type: ignore[union-attr]
    slot.refresh_from_db()
    assert slot.last_unlocked_at is not None


def test_a_guesser_at_one_address_leaves_grandma_her_own_tries(user: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    for n in range(5):
        attempt(album, slot, f"guess {n}", client="203.0.113.9")
    assert attempt(album, slot, GRANDMA, client="203.0.113.9").code == "rate_limited"  # type: ignore[union-attr]
    assert isinstance(attempt(album, slot, GRANDMA, client="198.51.100.20"), unlocking.Started)


def test_guessers_spread_over_many_addresses_are_stopped_at_the_slots_limit(
    user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    for n in range(settings.VEIL_UNLOCK_SLOT_TRIES):
        assert attempt(album, slot, "guess", client=f"203.0.113.{n}").code == "wrong_password"  # type: ignore[union-attr]
    monkeypatch.setattr(AlbumKeySlot, "unwrap", lambda *a: pytest.fail("Argon2 ran past the slot's limit"))
    assert attempt(album, slot, GRANDMA, client="198.51.100.20").code == "rate_limited"  # type: ignore[union-attr]


def test_a_refused_guesser_takes_nothing_more_from_the_slot(user: Any, fresh_redis: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    for _ in range(50):
        attempt(album, slot, "guess", client="203.0.113.9")
    assert int(fresh_redis.get(tries.PREFIX + str(slot.pk))) == 5


def test_every_album_passphrase_check_takes_a_try_from_the_owner_slot(
    owner_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a recipient (page and API) and rotating the key try the album passphrase: wrong
    guesses there use up the same allowance as unlocking, and a success gives its try back."""
    album = AlbumFactory(owner=user)
    owner = album.key_slots.get(kind="owner")
    add = reverse("sharing:recipient-add", args=[album.pk])
    form = {"name": "Tom", "password_choice": "generate", "owner_passphrase": "not it"}
    assert owner_client.post(add, form, REMOTE_ADDR="203.0.113.9").status_code == 400
    api = f"/api/albums/{album.pk}/recipients/"
    for _ in range(2):
        wrong = owner_client.post(api, {"name": "Tom", "owner_passphrase": "not it"}, REMOTE_ADDR="203.0.113.9")
        assert wrong.status_code == 400
    for _ in range(2):
        with pytest.raises(recipients.SharingError, match="not this album's passphrase"):
            recipients.rotate_album_key(album, "not it", "203.0.113.9")
    monkeypatch.setattr(AlbumKeySlot, "unwrap", lambda *a: pytest.fail("Argon2 ran past the limit"))
    refused = owner_client.post(api, {"name": "Tom", "owner_passphrase": PASSPHRASE}, REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 429
    assert refused.json()["owner_passphrase"] == ["Too many tries; try again in 15 minutes."]
    assert (
        owner_client.post(add, {**form, "owner_passphrase": PASSPHRASE}, REMOTE_ADDR="203.0.113.9").status_code == 429
    )
    page = attempt(album, owner, PASSPHRASE, client="203.0.113.9", via=UnlockAttempt.Via.ALBUM_PAGE)
    assert page == unlocking.Refused("rate_limited", "Too many tries; try again in 15 minutes.")
    monkeypatch.undo()
    assert (
        owner_client.post(api, {"name": "Tom", "owner_passphrase": PASSPHRASE}, REMOTE_ADDR="10.9.9.9").status_code
        == 201
    )


def test_a_try_given_back_after_its_window_ended_leaves_no_counter(fresh_redis: Any) -> None:
    limiter = tries.limiter()
    assert limiter.reserve(42, "203.0.113.9").allowed
    for key in limiter.keys(42, "203.0.113.9"):
        assert 0 < fresh_redis.ttl(key) <= limiter.window
    limiter.give_back(42, "203.0.113.9")
    for key in limiter.keys(42, "203.0.113.9"):
        assert fresh_redis.get(key) == b"0" and 0 < fresh_redis.ttl(key) <= limiter.window, "the expiry is kept"
    fresh_redis.delete(*limiter.keys(42, "203.0.113.9"))  # the window ends
    limiter.give_back(42, "203.0.113.9")
    assert not fresh_redis.exists(*limiter.keys(42, "203.0.113.9"))


def test_the_owner_is_not_offered_or_tried_through_the_share_link(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    album = AlbumFactory()
    done_photo(album)
    recipient(album)
    page = client.get(album.share_url()).content.decode()
    assert "Grandma" in page and 'value="' + str(album.key_slots.get(kind="owner").pk) + '"' not in page
    monkeypatch.setattr(AlbumKeySlot, "unwrap", lambda *a: pytest.fail("the owner's passphrase was tried"))
    assert attempt(album, album.key_slots.get(kind="owner"), PASSPHRASE).code == "revoked"  # type: ignore[union-attr]


def test_tries_at_an_expired_slot_are_limited_and_the_log_is_bounded(user: Any, settings: Any) -> None:
    settings.VEIL_UNLOCK_LOG_KEEP = 4
    album = AlbumFactory(owner=user)
    slot = recipient(album, expires_at=timezone.now() - timedelta(minutes=1))
    codes = [attempt(album, slot, GRANDMA).code for _ in range(8)]  # type: ignore[union-attr]
    assert codes == ["expired"] * 5 + ["rate_limited"] * 3
    assert album.unlock_attempts.count() == 4
    assert album.unlock_attempts.first().outcome == "rate_limited"  # type: ignore[union-attr]


def test_the_owner_sees_failed_unlock_attempts(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    attempt(album, slot, "wrong")
    attempt(album, slot, GRANDMA)

    page = owner_client.get(reverse("sharing:album", args=[album.pk])).content.decode()

    assert "1 failed unlock attempt in the last 30 days." in page
    assert "Wrong password" in page and "Unlocked" in page
    assert page.count('class="attempt-failed"') == 1


def test_album_settings_turn_decoy_mode_on_and_off(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    assert not album.decoy_mode and not album.downloads_include_envelope
    url = reverse("sharing:settings", args=[album.pk])

    owner_client.post(url, {"decoy_mode": "on"})
    album.refresh_from_db()
    assert album.decoy_mode
    owner_client.post(url, {})
    album.refresh_from_db()
    assert not album.decoy_mode


# --- rotating the album key --------------------------------------------------------------------


def test_rotating_the_album_key_reseals_every_photo_and_keeps_the_family(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    photos = [done_photo(album) for _ in range(2)]
    recipient(album, "Grandma")
    recipient(album, "Ben", password="a kite over the harbour")
    old_public, old_private = album.public_key_bytes, album.key_slots.get(kind="owner").unwrap(PASSPHRASE)
    url = reverse("sharing:key-rotate", args=[album.pk])
    assert "I understand" not in owner_client.get(reverse("sharing:album", args=[album.pk])).content.decode()

    wrong = owner_client.post(url, {"owner_passphrase": "nope"})
    assert wrong.status_code == 400 and "That is not this album&#x27;s passphrase." in wrong.content.decode()
    response = owner_client.post(url, {"owner_passphrase": PASSPHRASE})

    assert response.status_code == 302
    message = owner_client.get(response.url).content.decode()
    assert "2 photos now open with it. Everyone on the list keeps access with their own password (Ben, Grandma)." in (
        message
    )
    album.refresh_from_db()
    new_private = album.key_slots.get(kind="owner").unwrap(PASSPHRASE)  # the same passphrase
    assert album.public_key_bytes != old_public
    assert keys.public_key_from_private(new_private) == album.public_key_bytes
    assert list(album.key_slots.values_list("label", flat=True)) == ["owner", "Ben", "Grandma"]
    # each recipient's own password now opens the new key, and the new key only
    assert album.key_slots.get(label="Grandma").unwrap(GRANDMA) == new_private
    assert album.key_slots.get(label="Ben").unwrap("a kite over the harbour") == new_private
    with pytest.raises(WrongKey):
        album.key_slots.get(label="Ben").unwrap(GRANDMA)
    started = attempt(album, album.key_slots.get(label="Grandma"), GRANDMA)
    assert isinstance(started, unlocking.Started) and len(started.photo_ids) == 2
    for photo, content_key in photos:
        photo.refresh_from_db()
        env = envelope.Envelope.from_bytes(bytes(photo.envelope))
        assert keys.open_content_key(env.sealed_content_key, new_private) == content_key
        envelope.verify_envelope(env, content_key)  # the MAC was computed again
        with pytest.raises(WrongKey):
            keys.open_content_key(env.sealed_content_key, old_private)


def test_a_recipient_from_before_slot_keys_still_unlocks_and_a_rotation_asks_before_removing_them(
    owner_client: Client, user: Any
) -> None:
    album = AlbumFactory(owner=user)
    done_photo(album)
    private = album.key_slots.get(kind="owner").unwrap(PASSPHRASE)
    legacy = AlbumKeySlot.objects.create(  # the album key wrapped by her password, as before
        album=album, kind="recipient", label="Aunt May", slot=keys.wrap_private_key(private, GRANDMA).to_bytes()
    )
    recipient(album, "Ben", password="a kite over the harbour")
    assert legacy.unwrap(GRANDMA) == private and not legacy.can_follow_rotation
    url = reverse("sharing:key-rotate", args=[album.pk])
    page = owner_client.get(reverse("sharing:album", args=[album.pk])).content.decode()
    assert "I understand that Aunt May will be removed" in page

    unconfirmed = owner_client.post(url, {"owner_passphrase": PASSPHRASE})
    assert unconfirmed.status_code == 400 and "Tick the box to confirm that Aunt May will be removed." in (
        unconfirmed.content.decode()
    )
    album.refresh_from_db()
    assert album.key_slots.filter(label="Aunt May").exists()
    response = owner_client.post(url, {"owner_passphrase": PASSPHRASE, "confirm": "on"})

    message = owner_client.get(response.url).content.decode()
    assert "keeps access with their own password (Ben). Add Aunt May again" in message
    assert list(album.key_slots.values_list("label", flat=True)) == ["owner", "Ben"]


def test_the_key_is_not_rotated_while_photos_are_being_anonymized(user: Any) -> None:
    album = AlbumFactory(owner=user)
    PhotoFactory(album=album, status=Photo.Status.ANONYMIZING)
    before = album.public_key_bytes
    with pytest.raises(recipients.SharingError, match="still being anonymized"):
        recipients.rotate_album_key(album, PASSPHRASE, OWNERS_ADDRESS)
    album.refresh_from_db()
    assert album.public_key_bytes == before


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread CPU priority is a Linux feature")
def test_recovery_work_runs_at_a_lower_cpu_priority_than_the_worker_and_returns_its_result() -> None:
    import threading

    from webapp.sharing import tasks

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = niceness()
    assert tasks.in_background(niceness) == mine + tasks.BACKGROUND_NICENESS
    assert niceness() == mine  # the worker's own thread (uploads) keeps its priority
    with pytest.raises(WrongKey):  # the work's errors reach the task as they are
        tasks.in_background(lambda: keys.open_content_key(bytes(92), bytes(32)))


def test_a_photo_with_empty_recovery_data_fails_alone_and_the_rest_of_the_album_unlocks() -> None:
    """Review round 10: on SQLite the head of an empty envelope reads as NULL, which broke the
    unlock of the whole album."""
    album = AlbumFactory()
    good, _ = done_photo(album)
    broken, _ = done_photo(album)
    Photo.objects.filter(pk=broken.pk).update(envelope=b"")
    outcome = attempt(album, recipient(album), GRANDMA)
    assert isinstance(outcome, unlocking.Started)
    assert outcome.photo_ids == [str(good.pk)] and outcome.failed == {str(broken.pk): unlocking.KEY_MISMATCH}
