from __future__ import annotations

from typing import ClassVar

from django.contrib import admin
from django.http import HttpRequest

from .models import Album, AlbumKeySlot, Photo


class AlbumKeySlotInline(admin.TabularInline):
    model = AlbumKeySlot
    fields = ("kind", "label", "created_at", "expires_at", "last_unlocked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Album)
class AlbumAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "created_at")
    list_select_related = ("owner",)
    search_fields = ("name", "owner__username")
    readonly_fields = ("id", "owner", "fingerprint", "created_at")
    fields = ("id", "name", "owner", "fingerprint", "created_at", "decoy_mode", "downloads_include_envelope")
    inlines: ClassVar = [AlbumKeySlotInline]


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ("id", "album", "status", "faces", "created_at")
    list_select_related = ("album",)
    list_filter = ("status",)
    search_fields = ("id", "album__name", "album__owner__username")
    fields = ("id", "album", "status", "progress", "failure_reason", "retryable", "faces", "format", "width", "height")
    readonly_fields = fields


@admin.register(AlbumKeySlot)
class AlbumKeySlotAdmin(admin.ModelAdmin):
    """Who holds a key to which album; the wrapped key itself is never shown."""

    list_display = ("album", "kind", "label", "created_at", "expires_at", "last_unlocked_at")
    list_select_related = ("album",)
    list_filter = ("kind",)
    search_fields = ("label", "album__name")
    fields = ("album", "kind", "label", "created_at", "expires_at", "last_unlocked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # slots are made with a password, by the album and sharing pages
