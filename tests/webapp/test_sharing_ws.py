"""The unlock websockets with the real channels_redis layer: who may connect, what a wrong,
revoked, expired or rate-limited unlock hears, what a real or decoy unlock queues for the
workers (sealed), and how a worker's sealed result reaches the page. The worker's side is
played here by hand; the real worker is in test_sharing_integration.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from webapp import texts
from webapp.albums.models import Album, AlbumKeySlot
from webapp.asgi import application
from webapp.sharing import consumers, protocol, sessions, tasks, transit, unlocking
from webapp.sharing.models import UnlockAttempt

from .factories import PASSPHRASE, AlbumFactory, UserFactory
from .test_sharing import GRANDMA, done_photo, recipient


async def deliver(layer: Any, channel: str, session: str, photo_id: str, sealed: bytes) -> None:
    """What a worker does with a recovered photo: into the viewing's mailbox, then ring."""
    await sync_to_async(sessions.post)(session, photo_id, sessions.RESULT, sealed)
    await layer.send(channel, {"type": "unlock.ready", "session": session, "photo_id": photo_id})


# The consumer reads the database from another thread: committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost:8000")


def share_socket(album: Album, *headers: tuple[bytes, bytes], token: str | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/share/{token or album.share_token}/", headers=[ORIGIN, *headers])


def owner_socket(album: Album, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/albums/{album.pk}/unlock/", headers=list(headers))


def session_cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


def unlock(slot: AlbumKeySlot | int, password: str) -> dict[str, Any]:
    return {"type": "unlock", "data": {"slot": slot if isinstance(slot, int) else slot.pk, "password": password}}


def connects(ws: WebsocketCommunicator) -> bool:
    async def scenario() -> bool:
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    return async_to_sync(scenario)()


def exchange(ws: WebsocketCommunicator, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Connect, send each request and collect the text answer to it."""

    async def scenario() -> list[dict[str, Any]]:
        connected, _ = await ws.connect()
        assert connected
        answers = []
        for request in requests:
            await ws.send_json_to(request)
            answers.append(await ws.receive_json_from(timeout=10))
        await ws.disconnect()
        return answers

    return async_to_sync(scenario)()


def queued_tasks(client: redis.Redis) -> list[list[Any]]:
    """The args of every recover task waiting in the broker (on the unlock queue)."""
    found = []
    for raw in client.lrange("unlock", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "sharing.recover_photo":
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            assert kwargs == {}
            found.append(args)
    return found


# --- who may connect -------------------------------------------------------------------------


def test_anyone_with_the_link_connects_and_nobody_else() -> None:
    album = AlbumFactory()
    assert connects(share_socket(album))  # no login: the token is the capability
    assert not connects(share_socket(album, token="x" * 32))
    evil = WebsocketCommunicator(
        application, f"/ws/share/{album.share_token}/", headers=[(b"origin", b"https://evil.example")]
    )
    assert not connects(evil)


def test_the_album_page_socket_is_for_its_owner_only() -> None:
    owner, stranger = UserFactory(), UserFactory()
    album = AlbumFactory(owner=owner)
    assert connects(owner_socket(album, ORIGIN, session_cookie(owner)))
    assert not connects(owner_socket(album, ORIGIN))
    assert not connects(owner_socket(album, ORIGIN, session_cookie(stranger)))
    assert not connects(owner_socket(album, (b"origin", b"https://evil.example"), session_cookie(owner)))


# --- refusals --------------------------------------------------------------------------------


def test_a_wrong_password_hears_a_clear_sentence_and_is_logged() -> None:
    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)

    [answer] = exchange(share_socket(album), unlock(slot, "grandpa's garden"))

    assert answer == {
        "type": "unlock.refused",
        "data": {"code": "wrong_password", "message": "That password does not open this album."},
    }
    logged = UnlockAttempt.objects.get()
    assert (logged.slot_id, logged.outcome, logged.via) == (slot.pk, "wrong_password", "share_link")


def test_revoked_expired_and_malformed_unlocks_are_refused_with_sentences() -> None:
    album = AlbumFactory()
    gone = recipient(album, "Tom", "tom's own password")
    gone_id = gone.pk
    gone.delete()
    late = recipient(album, "Ann", "ann's own password", expires_at=timezone.now() - timedelta(days=1))

    revoked, expired, malformed = exchange(
        share_socket(album),
        unlock(gone_id, "tom's own password"),
        unlock(late, "ann's own password"),
        {"type": "unlock", "data": {"slot": late.pk}},
    )

    assert revoked["data"] == {"code": "revoked", "message": unlocking.REVOKED}
    assert expired["data"]["code"] == "expired" and expired["data"]["message"].startswith("Access for Ann ended on")
    assert malformed["data"] == {"code": "bad_request", "message": "Choose your name and type your password."}


def test_the_sixth_try_is_refused_without_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    album = AlbumFactory()
    slot = recipient(album)
    limiter = unlocking.limiter()
    for _ in range(settings.VEIL_UNLOCK_TRIES):  # five wrong tries already made (the test socket has no address)
        assert limiter.reserve(slot.pk, "unknown").allowed
    monkeypatch.setattr(AlbumKeySlot, "unwrap", lambda *a: pytest.fail("Argon2 ran past the limit"))

    [answer] = exchange(share_socket(album), unlock(slot, GRANDMA))

    assert answer["data"] == {"code": "rate_limited", "message": "Too many tries; try again in 15 minutes."}
    assert UnlockAttempt.objects.get().outcome == "rate_limited"


def test_a_link_rotated_while_the_page_is_open_stops_working_at_once() -> None:
    album = AlbumFactory()
    slot = recipient(album)
    ws = share_socket(album)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        connected, _ = await ws.connect()
        try:
            assert connected
            await sync_to_async(album.rotate_share_token)()
            await ws.send_json_to(unlock(slot, GRANDMA))
            answer = await ws.receive_json_from(timeout=10)
            closed = await ws.receive_output(timeout=5)
            return answer, closed
        finally:  # the consumer has its ending too: left running, the loop's shutdown can wait on it for ever
            await ws.disconnect()

    answer, closed = async_to_sync(scenario)()
    assert answer["data"]["code"] == "link_gone"
    assert answer["data"]["message"].startswith("This share link no longer works")
    assert closed == {"type": "websocket.close", "code": 4404}
    assert not UnlockAttempt.objects.exists()


# --- what an unlock queues, and how results come back --------------------------------------------


def test_an_unlock_queues_sealed_keys_and_pushes_the_workers_result(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    (with_faces, content_key), _ = done_photo(album), done_photo(album, faces=0)
    slot = recipient(album)
    ws = share_socket(album)
    photo_id = str(with_faces.pk)
    recovered = b"\x89PNG pretend these are the real faces"

    async def scenario() -> tuple[dict[str, Any], list[Any], bytes, dict[str, Any], list[Any]]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(slot, GRANDMA))
        started = await ws.receive_json_from(timeout=10)
        [args] = queued_tasks(fresh_redis)
        # Play the worker: take the sealed request, answer sealed under the session key.
        [key] = fresh_redis.keys(transit.UNLOCK_PREFIX + "*")
        sealed_request = fresh_redis.get(key)
        request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], photo_id) or b"")
        sealed = protocol.seal_result(request.session_key, args[3], photo_id, recovered)
        layer = get_channel_layer()
        await deliver(layer, args[2], args[3], photo_id, sealed)
        frame = await ws.receive_from(timeout=10)
        finished = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return started, [args, request, sealed_request], frame, finished, []

    started, (args, request, sealed_request), frame, finished, _ = async_to_sync(scenario)()

    # Only the photo with faces is recovered; the task message holds ids and nothing else.
    assert started == {"type": "unlock.started", "data": {"session": args[3], "photos": [photo_id], "workers": 0}}
    assert args[0] == photo_id and args[2].startswith("specific.")
    assert request.content_key == content_key and request.decoy_password is None
    assert content_key not in sealed_request and request.session_key not in sealed_request
    assert len(sealed_request) == 32 + 12 + 256 + 16  # padded: a decoy request looks the same
    assert not fresh_redis.keys(transit.UNLOCK_PREFIX + "*")  # taken with GETDEL
    header, image = protocol.parse_photo_frame(frame)
    assert header == {
        "type": "unlock.photo",
        "data": {"session": args[3], "photo_id": photo_id, "content_type": "image/jpeg"},
    }
    assert image == recovered
    assert finished["data"] == {"session": args[3], "recovered": 1, "failed": 0}
    slot.refresh_from_db()
    assert slot.last_unlocked_at is not None
    assert UnlockAttempt.objects.get().outcome == "success"


def test_a_page_that_floods_its_socket_is_slowed_before_any_work(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VEIL_SOCKET_RATE = 3
    album = AlbumFactory()
    slot = recipient(album)
    calls: list[int] = []
    real_unwrap = AlbumKeySlot.unwrap

    def counted(self: AlbumKeySlot, password: str) -> bytes:
        calls.append(1)
        return real_unwrap(self, password)

    monkeypatch.setattr(AlbumKeySlot, "unwrap", counted)
    answers = exchange(share_socket(album), *[unlock(slot, f"guess {n}") for n in range(5)])
    assert [a["data"]["code"] for a in answers] == ["wrong_password"] * 3 + ["rate_limited"] * 2
    assert answers[-1]["data"]["message"] == "Too many requests from this page; wait a minute and try again."
    assert len(calls) == 3


def test_an_unlock_checking_its_password_does_not_hold_up_other_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    album = AlbumFactory()
    slot = recipient(album)
    other_socket_answered = threading.Event()
    real_unwrap = AlbumKeySlot.unwrap

    def slow_argon2(self: AlbumKeySlot, password: str) -> bytes:
        # Held until another socket of this process has been served: on the one thread that the
        # sockets' database calls share, that would never happen (its connect would time out).
        other_socket_answered.wait(timeout=10)
        return real_unwrap(self, password)

    monkeypatch.setattr(AlbumKeySlot, "unwrap", slow_argon2)
    first, second = share_socket(album), share_socket(album)

    async def scenario() -> dict[str, Any]:
        assert (await first.connect())[0]
        await first.send_json_to(unlock(slot, "a wrong guess"))
        connected, _ = await second.connect(timeout=5)  # its album lookup runs meanwhile
        assert connected
        other_socket_answered.set()
        answer = await first.receive_json_from(timeout=10)
        await first.disconnect()
        await second.disconnect()
        return answer

    assert async_to_sync(scenario)()["data"]["code"] == "wrong_password"


def test_an_unlock_waits_for_its_argon2_turn_in_the_event_loop_not_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review round 9: unlocks waited for their turn in a first-come thread pool, so a flood from
    many addresses made Grandma wait for all of it, whatever the fair turns said."""
    from cipher_worker import keys
    from cipher_worker.turns import FairTurns

    album = AlbumFactory()
    slot = recipient(album)
    turns = FairTurns(1)
    monkeypatch.setattr(keys, "_argon2_turns", turns)
    begun = threading.Event()
    real_open = consumers.open_unlock

    def watched_open(*args: Any, **kwargs: Any) -> Any:
        begun.set()
        return real_open(*args, **kwargs)

    monkeypatch.setattr(consumers, "open_unlock", watched_open)
    release = threading.Event()

    def someone_hashing() -> None:
        with turns.turn(("address:elsewhere",)):
            release.wait(10)

    holder = threading.Thread(target=someone_hashing, daemon=True)
    holder.start()
    ws = share_socket(album)

    async def scenario() -> tuple[bool, bool, dict[str, Any]]:
        assert (await ws.connect())[0]
        try:
            await ws.send_json_to(unlock(slot, "a wrong guess"))
            await asyncio.sleep(0.3)
            waiting_in_loop = any(w.wake is not None for w in turns._waiters)
            started_early = begun.is_set()
            release.set()
            return waiting_in_loop, started_early, await ws.receive_json_from(timeout=10)
        finally:
            await ws.disconnect()

    waiting_in_loop, started_early, answer = async_to_sync(scenario)()
    holder.join(5)
    assert waiting_in_loop and not started_early
    assert answer["data"]["code"] == "wrong_password"


def test_a_message_rate_is_a_sliding_window() -> None:
    from webapp.limits import MessageRate

    now = [0.0]
    rate = MessageRate(2, window=60, clock=lambda: now[0])
    assert rate.allow() and rate.allow() and not rate.allow()
    now[0] = 59.0
    assert not rate.allow()
    now[0] = 60.5
    assert rate.allow() and rate.allow() and not rate.allow()


def test_the_owner_slot_cannot_be_tried_through_the_share_link() -> None:
    album = AlbumFactory()
    done_photo(album)
    [answer] = exchange(share_socket(album), unlock(album.key_slots.get(kind="owner"), PASSPHRASE))
    assert answer["data"]["code"] == "revoked"


def test_the_transit_entry_expires_quickly(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    done_photo(album)
    exchange(share_socket(album), unlock(recipient(album), GRANDMA))

    [key] = fresh_redis.keys(transit.UNLOCK_PREFIX + "*")
    assert 0 < fresh_redis.ttl(key) <= settings.VEIL_UNLOCK_TTL


def test_results_of_another_session_or_after_lock_are_dropped(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    photo, _ = done_photo(album)
    photo_id = str(photo.pk)
    grandma = recipient(album).pk
    ws = share_socket(album)

    async def scenario() -> tuple[bool, bool, dict[str, Any]]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(grandma, GRANDMA))
        await ws.receive_json_from(timeout=10)
        [args] = queued_tasks(fresh_redis)
        request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], photo_id) or b"")
        layer = get_channel_layer()
        # Sealed under a key that is not this session's: the consumer cannot open it.
        forged = protocol.seal_result(os.urandom(32), args[3], photo_id, b"not from our worker")
        await deliver(layer, args[2], "other", photo_id, forged)
        ignored = await ws.receive_nothing(timeout=0.5)
        await ws.send_json_to({"type": "lock"})
        real = protocol.seal_result(request.session_key, args[3], photo_id, b"late")
        await deliver(layer, args[2], args[3], photo_id, real)
        dropped = await ws.receive_nothing(timeout=0.5)
        # A result sealed with the wrong key for the live session is a failure, not a photo.
        await ws.send_json_to(unlock(grandma, GRANDMA))
        started = await ws.receive_json_from(timeout=10)
        session = started["data"]["session"]
        await deliver(layer, args[2], session, photo_id, forged)
        failed = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return ignored, dropped, failed

    ignored, dropped, failed = async_to_sync(scenario)()
    assert ignored and dropped
    assert failed["type"] == "unlock.failed" and failed["data"]["photo_id"] == photo_id


def test_a_worker_that_finds_the_request_expired_tells_the_page(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    photo, _ = done_photo(album)
    grandma = recipient(album).pk
    ws = share_socket(album)

    async def scenario() -> dict[str, Any]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(grandma, GRANDMA))
        await ws.receive_json_from(timeout=10)
        [args] = queued_tasks(fresh_redis)
        fresh_redis.delete(transit.unlock_key(args[1]))  # as if its TTL had passed
        assert await sync_to_async(tasks.recover_photo.run)(*args) == "failed"
        failed = await ws.receive_json_from(timeout=10)
        finished = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return {"failed": failed, "finished": finished}

    got = async_to_sync(scenario)()
    assert got["failed"]["data"]["message"] == texts.UNLOCK_WAITED_TOO_LONG and got["failed"]["data"][
        "photo_id"
    ] == str(photo.pk)
    assert got["finished"]["data"]["recovered"] == 0 and got["finished"]["data"]["failed"] == 1


def test_a_closed_page_costs_the_workers_nothing_and_leaves_nothing_waiting(
    fresh_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    album = AlbumFactory()
    done_photo(album)
    done_photo(album)
    slot = recipient(album)
    ws = share_socket(album)
    monkeypatch.setattr(tasks.cipher_api, "recover_photo", lambda *a, **k: pytest.fail("recovered for a closed page"))

    async def scenario() -> list[list[Any]]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(slot, GRANDMA))
        started = await ws.receive_json_from(timeout=10)
        assert sessions.is_open(started["data"]["session"])
        await ws.disconnect()
        return queued_tasks(fresh_redis)

    queued = async_to_sync(scenario)()

    assert len(queued) == 1 and not sessions.is_open(queued[0][3])  # a viewing starts with one photo queued
    assert [tasks.recover_photo.run(*args) for args in queued] == ["abandoned"]
    assert not fresh_redis.keys(transit.UNLOCK_PREFIX + "*")  # the sealed requests are gone all the same
    assert not fresh_redis.keys("veil:unlock-session:*") and not fresh_redis.zcard(sessions.OPEN + "unknown")


@pytest.mark.parametrize("page", ["drops its connection mid-photo", "stops reading"])
def test_a_page_that_goes_away_while_a_photo_is_on_its_way_ends_its_viewing(
    fresh_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:

    album = AlbumFactory()
    photo, _ = done_photo(album)
    slot = recipient(album)
    real_send = consumers.UnlockConsumer.send

    async def send(
        self: Any, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        if bytes_data is not None:
            raise ConnectionResetError("the page is gone")  # what the server says of a dead connection
        await real_send(self, text_data=text_data, close=close)

    if page == "drops its connection mid-photo":
        monkeypatch.setattr(consumers.UnlockConsumer, "send", send)
    monkeypatch.setattr(consumers, "FRAME_DEADLINE", 0.5)
    ws = share_socket(album)

    async def scenario() -> str:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(slot, GRANDMA))
        started = await ws.receive_json_from(timeout=10)
        if page == "stops reading":
            ws.output_queue._maxsize = 1  # the socket's writes no longer drain once one is waiting
        [args] = queued_tasks(fresh_redis)
        request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], str(photo.pk)) or b"")
        sealed = protocol.seal_result(request.session_key, args[3], str(photo.pk), b"the real faces")
        layer = get_channel_layer()
        await deliver(layer, args[2], args[3], str(photo.pk), sealed)  # the photo goes out; "finished" cannot
        session = str(started["data"]["session"])
        for _ in range(50):  # the viewing ends by itself, before this test lets the socket go
            if not await sync_to_async(sessions.is_open)(session):
                break
            await asyncio.sleep(0.1)
        ended = not await sync_to_async(sessions.is_open)(session)
        buffered = getattr(layer, "receive_buffer", {}).get(args[2])
        with contextlib.suppress(Exception):  # the consumer has ended, one way or the other
            await ws.wait(timeout=1)
        assert ended and not buffered
        return session

    async_to_sync(scenario)()


def test_one_address_has_only_so_many_viewings_open(settings: Any) -> None:
    settings.VEIL_UNLOCK_SESSIONS = 2
    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)

    def view(session: str, client: str) -> unlocking.Started | unlocking.Refused:
        return unlocking.begin_unlock(
            album, slot.pk, GRANDMA, client=client, session_id=session, session_key=bytes(32),
            reply_channel="specific.x", via=UnlockAttempt.Via.SHARE_LINK,
        )  # fmt: skip

    assert isinstance(view("a", "192.0.2.7"), unlocking.Started) and isinstance(
        view("b", "192.0.2.7"), unlocking.Started
    )
    refused = view("c", "192.0.2.7")
    assert isinstance(refused, unlocking.Refused) and refused.message == unlocking.TOO_MANY_VIEWINGS
    assert isinstance(view("d", "192.0.2.8"), unlocking.Started)  # someone else
    sessions.close_session("a", "192.0.2.7")
    assert isinstance(view("e", "192.0.2.7"), unlocking.Started)


def test_decoy_mode_queues_the_typed_password_like_a_real_unlock(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    album.decoy_mode = True
    album.save(update_fields=["decoy_mode"])
    photo, _ = done_photo(album)
    slot = recipient(album)

    [answer] = exchange(share_socket(album), unlock(slot, "a wrong guess"))

    assert answer["type"] == "unlock.started" and answer["data"]["photos"] == [str(photo.pk)]
    [args] = queued_tasks(fresh_redis)
    [key] = fresh_redis.keys(transit.UNLOCK_PREFIX + "*")
    assert len(fresh_redis.get(key)) == 32 + 12 + 256 + 16  # the same size as a real request
    request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], args[0]) or b"")
    assert request.decoy_password == "a wrong guess" and request.content_key is None
    assert UnlockAttempt.objects.get().outcome == "wrong_password"  # the owner still sees it


def test_the_owner_unlocks_from_the_album_page() -> None:
    owner = UserFactory()
    album = AlbumFactory(owner=owner)
    photo, _ = done_photo(album)

    [answer] = exchange(
        owner_socket(album, ORIGIN, session_cookie(owner)), unlock(album.key_slots.get(kind="owner"), PASSPHRASE)
    )

    assert answer["type"] == "unlock.started" and answer["data"]["photos"] == [str(photo.pk)]
    assert UnlockAttempt.objects.get().via == "album_page"


def test_a_viewing_over_the_address_limit_hears_why(settings: Any) -> None:
    settings.VEIL_UNLOCK_SESSIONS = 1
    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)
    first, second = share_socket(album), share_socket(album)

    async def scenario() -> dict[str, Any]:
        assert (await first.connect())[0] and (await second.connect())[0]
        await first.send_json_to(unlock(slot, GRANDMA))
        assert (await first.receive_json_from(timeout=10))["type"] == "unlock.started"
        await second.send_json_to(unlock(slot, GRANDMA))
        answer = await second.receive_json_from(timeout=10)
        await first.disconnect()
        await second.disconnect()
        return answer

    assert async_to_sync(scenario)()["data"] == {"code": "busy", "message": unlocking.TOO_MANY_VIEWINGS}


def test_a_viewing_has_at_most_two_photos_on_their_way_and_a_slow_page_holds_no_worker() -> None:
    from celery.exceptions import Retry

    assert sessions.open_session("s", "192.0.2.7", 60)
    assert [sessions.take_credit("s") for _ in range(3)] == [1, 1, 0]  # the third must wait
    sessions.give_credit("s")  # the page has taken one
    assert sessions.take_credit("s") == 1
    # no room for this photo: it goes back to the queue at once rather than keep a worker waiting,
    # as often as it takes (Celery's default would give up after 3) until the viewing ends
    assert tasks.recover_photo.max_retries is None
    args = ["0" * 32, "t", "specific.x", "s"]
    with pytest.raises(Retry):
        tasks.recover_photo.run(*args)
    sessions.close_session("s", "192.0.2.7")
    assert sessions.take_credit("s") == -1 and tasks.recover_photo.run(*args) == "abandoned"


@pytest.mark.parametrize("outcome", ["a recovered photo", "a failure"])
def test_an_outcome_whose_ring_was_lost_reaches_the_page_within_seconds(
    fresh_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    monkeypatch.setattr(consumers, "REDELIVERY_EVERY", 0.2)
    album = AlbumFactory()
    photo, _ = done_photo(album)
    photo_id = str(photo.pk)
    slot = recipient(album)
    ws = share_socket(album)

    async def scenario() -> tuple[Any, float, list[bytes]]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(unlock(slot, GRANDMA))
        await ws.receive_json_from(timeout=10)
        [args] = queued_tasks(fresh_redis)
        request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], photo_id) or b"")
        # the worker's outcome lands in the mailbox, but its ring never reaches the consumer
        if outcome == "a failure":
            await sync_to_async(sessions.post)(args[3], photo_id, sessions.FAILURE, b"This photo is gone.")
        else:
            sealed = protocol.seal_result(request.session_key, args[3], photo_id, b"the real faces")
            await sync_to_async(sessions.post)(args[3], photo_id, sessions.RESULT, sealed)
        started = time.monotonic()
        try:
            first = await (ws.receive_json_from(timeout=5) if outcome == "a failure" else ws.receive_from(timeout=5))
            waited = time.monotonic() - started
            await ws.receive_json_from(timeout=5)  # finished
            left = fresh_redis.keys(sessions.MAILBOX + "*")
        finally:
            await ws.disconnect()
        return first, waited, left

    first, waited, left = async_to_sync(scenario)()

    if outcome == "a failure":
        assert first["type"] == "unlock.failed" and first["data"]["message"] == "This photo is gone."
    else:
        assert protocol.parse_photo_frame(first)[1] == b"the real faces"
    assert waited < 3 and left == []  # taken once, and nothing of it stays in Redis


def test_viewings_that_start_together_take_turns_on_the_unlock_queue(fresh_redis: redis.Redis, settings: Any) -> None:
    settings.VEIL_UNLOCK_TTL = 10  # for the requests made at the start; a viewing still receiving gets more
    album = AlbumFactory()
    for _ in range(5):
        done_photo(album)
    slot = recipient(album)
    first_page, second_page = share_socket(album), share_socket(album)
    waits: list[int] = []

    async def scenario() -> tuple[list[str], list[str], list[list[Any]], list[list[Any]]]:
        for ws in (first_page, second_page):
            connected, _ = await ws.connect()
            assert connected
        try:
            return await both_viewings()
        finally:
            for ws in (first_page, second_page):
                await ws.disconnect()

    async def both_viewings() -> tuple[list[str], list[str], list[list[Any]], list[list[Any]]]:
        await first_page.send_json_to(unlock(slot, GRANDMA))
        first = (await first_page.receive_json_from(timeout=10))["data"]
        await second_page.send_json_to(unlock(slot, GRANDMA))
        second = (await second_page.receive_json_from(timeout=10))["data"]
        both_started = queued_tasks(fresh_redis)
        # a worker brings the first viewing's first photo: only then is its third one queued
        args = next(a for a in both_started if a[3] == first["session"] and a[0] == first["photos"][0])
        request = protocol.UnlockRequest.from_bytes(transit.take_unlock(args[1], args[0]) or b"")
        sealed = protocol.seal_result(request.session_key, args[3], args[0], b"the real faces")
        settings.VEIL_UNLOCK_TTL = 100
        await deliver(get_channel_layer(), args[2], args[3], args[0], sealed)
        await first_page.receive_from(timeout=10)
        for _ in range(150):  # the consumer queues the next photo just after sending this one
            one_arrived = queued_tasks(fresh_redis)
            if len(one_arrived) >= len(both_started) + 2:
                break
            await asyncio.sleep(0.1)
        later = [a for a in one_arrived if a not in both_started]
        waits.extend([fresh_redis.ttl(transit.unlock_key(a[1])) for a in later])
        waits.append(fresh_redis.ttl(sessions.SESSION + first["session"]))
        return [first["session"], *first["photos"]], second["photos"], both_started, one_arrived

    (first_session, *first), second, both_started, one_arrived = async_to_sync(scenario)()

    assert len(first) == len(second) == 5 and sorted(first) == sorted(second)
    assert sorted(a[3] == first_session for a in both_started) == [False, True]  # one each to begin with
    new = [a for a in one_arrived if a not in both_started]
    assert sorted((a[3], a[0]) for a in new) == sorted([(first_session, first[1]), (first_session, first[2])])
    # queued later, it and its viewing may wait as long as if they had been queued just now
    assert waits[0] > 60 and waits[-1] > 100
    # once the pages close, the photos never queued leave nothing waiting in transit: what is
    # left are the requests of tasks already queued (each ends with its TTL, or its worker)
    left = {key.decode() for key in fresh_redis.keys(transit.UNLOCK_PREFIX + "*")}
    taken = (first_session, first[0])
    assert left == {transit.unlock_key(a[1]) for a in one_arrived if (a[3], a[0]) != taken}


def test_an_outcome_for_a_viewing_that_has_ended_leaves_nothing_in_redis(fresh_redis: redis.Redis) -> None:
    assert sessions.open_session("viewing", "203.0.113.7", 60)
    assert sessions.post("viewing", "photo", sessions.RESULT, b"sealed under the session key")
    sessions.close_session("viewing", "203.0.113.7")
    assert fresh_redis.keys(sessions.MAILBOX + "*") == []  # the box went with the viewing
    # a worker finishing just after the page went away leaves nothing behind either
    assert not sessions.post("viewing", "photo", sessions.RESULT, b"sealed under the session key")
    assert fresh_redis.keys(sessions.MAILBOX + "*") == []


def test_photos_given_up_on_are_never_asked_of_a_worker(
    fresh_redis: redis.Redis, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VEIL_UNLOCK_TTL = 1
    monkeypatch.setattr(consumers, "GRACE", 0)
    monkeypatch.setattr(consumers, "REDELIVERY_EVERY", 0.2)
    album = AlbumFactory()
    for _ in range(4):
        done_photo(album)
    slot = recipient(album)
    ws = share_socket(album)

    async def scenario() -> list[dict[str, Any]]:
        connected, _ = await ws.connect()
        assert connected
        try:
            await ws.send_json_to(unlock(slot, GRANDMA))
            await ws.receive_json_from(timeout=10)
            return [await ws.receive_json_from(timeout=10) for _ in range(5)]  # 4 × failed, finished
        finally:
            await ws.disconnect()

    answers = async_to_sync(scenario)()

    assert [a["type"] for a in answers] == ["unlock.failed"] * 4 + ["unlock.finished"]
    assert {a["data"]["message"] for a in answers[:4]} == {consumers.TOO_SLOW}
    assert len(queued_tasks(fresh_redis)) == 1  # only the one queued at the start


def test_the_photos_in_view_come_first_and_scrolling_moves_others_ahead(fresh_redis: redis.Redis) -> None:
    album = AlbumFactory()
    photos = [str(done_photo(album)[0].pk) for _ in range(6)]  # the page shows them newest first
    newest_first = photos[::-1]
    slot = recipient(album)
    ws = share_socket(album)
    in_view = [newest_first[4], newest_first[2]]

    async def scenario() -> tuple[list[str], list[list[Any]], list[list[Any]]]:
        connected, _ = await ws.connect()
        assert connected
        try:
            request = unlock(slot, GRANDMA)
            request["data"]["first"] = [*in_view, "not a photo id", 7]
            await ws.send_json_to(request)
            started = (await ws.receive_json_from(timeout=10))["data"]["photos"]
            first_two = queued_tasks(fresh_redis)
            await ws.send_json_to({"type": "look", "data": {"photos": [newest_first[5]]}})
            await asyncio.sleep(0.3)  # the page's socket and the workers' ring are separate ways in: look first
            # a worker brings one photo: the page's next is the one it scrolled to
            args = first_two[0]
            request_bytes = transit.take_unlock(args[1], args[0]) or b""
            key = protocol.UnlockRequest.from_bytes(request_bytes).session_key
            await deliver(
                get_channel_layer(), args[2], args[3], args[0], protocol.seal_result(key, args[3], args[0], b"x")
            )
            await ws.receive_from(timeout=10)
            for _ in range(50):
                now = queued_tasks(fresh_redis)
                if len(now) >= len(first_two) + 2:
                    break
                await asyncio.sleep(0.1)
            return started, first_two, now
        finally:
            await ws.disconnect()

    started, first_two, now = async_to_sync(scenario)()

    assert started == [*in_view, *(p for p in newest_first if p not in in_view)]
    assert [a[0] for a in first_two] == in_view[:1]  # a viewing starts with one photo queued
    # once it is there, two: the one scrolled to, then the next in view
    assert [a[0] for a in now if a not in first_two][::-1] == [newest_first[5], in_view[1]]


def test_a_viewing_with_no_worker_alive_says_so_soon(fresh_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumers, "REDELIVERY_EVERY", 0.1)
    monkeypatch.setattr(consumers, "NO_WORKER_PATIENCE", 0.5)
    album = AlbumFactory()
    done_photo(album)
    slot = recipient(album)
    ws = share_socket(album)

    async def scenario() -> list[dict[str, Any]]:
        connected, _ = await ws.connect()
        assert connected
        try:
            await ws.send_json_to(unlock(slot, GRANDMA))
            return [await ws.receive_json_from(timeout=10) for _ in range(3)]
        finally:
            await ws.disconnect()

    started, failed, finished = async_to_sync(scenario)()

    assert started["data"]["workers"] == 0  # the page says at once that none is running
    assert failed["type"] == "unlock.failed" and failed["data"]["message"] == texts.NO_WORKER
    assert finished["type"] == "unlock.finished"
