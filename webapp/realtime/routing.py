from __future__ import annotations

from django.urls import path

from webapp.sharing.consumers import OwnerUnlockConsumer, ShareUnlockConsumer

from .consumers import UpdatesConsumer

websocket_urlpatterns = [
    path("ws/updates/", UpdatesConsumer.as_asgi()),
    path("ws/share/<slug:token>/", ShareUnlockConsumer.as_asgi()),
    path("ws/albums/<uuid:album_id>/unlock/", OwnerUnlockConsumer.as_asgi()),
]
