"""The websocket at /ws/updates/: one per open page, pushing status messages to their user."""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.realtime.status import PHOTO_STATUS, user_group

from .models import Photo

# Close codes in the 4000–4999 range are ours; browsers see them in CloseEvent.code.
CLOSE_UNAUTHENTICATED = 4401


class UpdatesConsumer(AsyncJsonWebsocketConsumer):
    """Joins the group ``user-<id>`` of a logged-in user; anonymous sockets are refused.

    Each message is checked against the database before it is forwarded, so a message that
    reaches the group by mistake (or a photo that changed hands) never shows on the page.
    """

    user_id: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.user_id is not None:
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The page only listens; anything it sends is ignored.
        return

    async def photo_status(self, event: dict[str, Any]) -> None:
        data = event.get("data")
        if not isinstance(data, dict) or not await self._may_see_photo(data.get("photo_id")):
            return
        await self.send_json({"type": PHOTO_STATUS, "data": data})

    @database_sync_to_async
    def _may_see_photo(self, photo_id: object) -> bool:
        try:
            key = uuid.UUID(str(photo_id))
        except ValueError:
            return False
        return self.user_id is not None and Photo.objects.owned_by(self.user_id).filter(pk=key).exists()
