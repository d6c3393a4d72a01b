from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from webapp.asgi import application
from webapp.realtime.status import photo_status_message, send_status

from .factories import AlbumFactory, PhotoFactory, UserFactory

# The consumer reads the session and the photos from another thread: committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost:8000")


def session_cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


def communicator(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/updates/", headers=list(headers))


def test_an_anonymous_socket_is_refused() -> None:
    async def scenario() -> bool:
        connected, _ = await communicator(ORIGIN).connect()
        return connected

    assert async_to_sync(scenario)() is False


def test_a_socket_from_a_foreign_origin_is_refused() -> None:
    cookie = session_cookie(UserFactory())

    async def scenario() -> bool:
        connected, _ = await communicator((b"origin", b"https://evil.example"), cookie).connect()
        return connected

    assert async_to_sync(scenario)() is False


def test_the_owner_receives_a_status_sent_through_the_channel_layer() -> None:
    user = UserFactory()
    photo = PhotoFactory(album=AlbumFactory(owner=user))
    message = photo_status_message(
        photo_id=photo.pk, album_id=photo.album_id, status="anonymizing", progress=0.5, message="Anonymizing…"
    )

    cookie = session_cookie(user)

    async def scenario() -> Any:
        ws = communicator(ORIGIN, cookie)
        connected, _ = await ws.connect()
        assert connected
        assert await sync_to_async(send_status)(user.pk, message)
        received = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return received

    assert async_to_sync(scenario)() == message


def test_a_status_of_another_users_photo_is_not_forwarded() -> None:
    user, stranger = UserFactory(), UserFactory()
    mine = PhotoFactory(album=AlbumFactory(owner=user))
    theirs = PhotoFactory(album=AlbumFactory(owner=stranger))

    def status_of(photo: Any) -> Any:
        return photo_status_message(photo_id=photo.pk, album_id=photo.album_id, status="done", progress=1.0)

    cookie = session_cookie(user)

    async def scenario() -> tuple[bool, Any]:
        ws = communicator(ORIGIN, cookie)
        connected, _ = await ws.connect()
        assert connected
        # Misaddressed on purpose: the consumer must check the photo, not trust the group.
        await sync_to_async(send_status)(user.pk, status_of(theirs))
        nothing = await ws.receive_nothing(timeout=0.5)
        await sync_to_async(send_status)(user.pk, status_of(mine))
        received = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return nothing, received

    nothing, received = async_to_sync(scenario)()
    assert nothing is True
    assert received["data"]["photo_id"] == str(mine.pk)
