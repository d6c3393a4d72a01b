"""The status messages pushed to browsers, and the one helper that sends them.

A message on the channel layer and on the websocket has the same shape::

    {"type": "photo.status",
     "data": {"photo_id": str, "album_id": str, "status": str, "progress": float 0..1,
              "message": str, "thumbnail_url": str | None, "file_name": str, "retryable": bool}}

``status`` is one of the photo states (queued, detecting, anonymizing, done, failed);
``message`` is a human sentence (the failure reason when failed); ``file_name`` the uploaded
file's name ("" in progress messages, which the page already has it for); ``retryable``
whether a failed photo may be tried again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

PHOTO_STATUS: Final = "photo.status"


class PhotoStatusData(TypedDict):
    photo_id: str
    album_id: str
    status: str
    progress: float
    message: str
    thumbnail_url: str | None
    file_name: str
    retryable: bool


class PhotoStatusMessage(TypedDict):
    type: Literal["photo.status"]
    data: PhotoStatusData


def user_group(user_id: int) -> str:
    """The channel-layer group every websocket of one user joins."""
    return f"user-{user_id}"


def photo_status_message(
    *,
    photo_id: uuid.UUID | str,
    album_id: uuid.UUID | str,
    status: str,
    progress: float,
    message: str = "",
    thumbnail_url: str | None = None,
    file_name: str = "",
    retryable: bool = False,
) -> PhotoStatusMessage:
    return {
        "type": PHOTO_STATUS,
        "data": {
            "photo_id": str(photo_id),
            "album_id": str(album_id),
            "status": status,
            "progress": round(min(max(float(progress), 0.0), 1.0), 3),
            "message": message,
            "thumbnail_url": thumbnail_url,
            "file_name": file_name,
            "retryable": retryable,
        },
    }


def send_status(user_id: int, message: PhotoStatusMessage) -> bool:
    """Push ``message`` to every open websocket of ``user_id``, from sync code (views, tasks).

    Live updates are a convenience on top of the database, which holds the truth: a failure
    here is logged and reported as False, never raised into the photo's processing.
    """
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(user_group(user_id), dict(message))
    except Exception:
        log.warning("could not push a status update to user %s", user_id, exc_info=True)
        return False
    return True
