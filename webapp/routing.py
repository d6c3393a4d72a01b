"""The websocket routes, as urls.py holds the pages': live photo status, and unlocking."""

from __future__ import annotations

from django.urls import path

from webapp.albums.consumers import UpdatesConsumer
from webapp.sharing.consumers import OwnerUnlockConsumer, ShareUnlockConsumer

websocket_urlpatterns = [
    path("ws/updates/", UpdatesConsumer.as_asgi()),
    path("ws/share/<slug:token>/", ShareUnlockConsumer.as_asgi()),
    path("ws/albums/<uuid:album_id>/unlock/", OwnerUnlockConsumer.as_asgi()),
]
