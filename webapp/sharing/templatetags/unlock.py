"""``{% unlock_dialog album "owner" %}`` or ``"share"``: the "Show real faces" button, its dialog
and the lightbox, wired to the matching unlock websocket by static/unlock.js."""

from __future__ import annotations

from typing import Any, Literal

from django import template

from webapp.albums.models import Album

register = template.Library()


@register.inclusion_tag("sharing/unlock_dialog.html")
def unlock_dialog(album: Album, page: Literal["owner", "share"]) -> dict[str, Any]:
    socket = f"/ws/albums/{album.pk}/unlock/" if page == "owner" else f"/ws/share/{album.share_token}/"
    slots = list(album.key_slots.all())  # the owner first
    if page == "share":  # family members open share links; the owner unlocks on the album page
        slots = [slot for slot in slots if not slot.is_owner]
    return {"album": album, "slots": slots, "socket_path": socket, "page": page}
