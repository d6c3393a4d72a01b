from __future__ import annotations

from typing import ClassVar

from django.contrib import admin

from .models import Album, AlbumKeySlot, Photo


class AlbumKeySlotInline(admin.TabularInline):
    model = AlbumKeySlot
    fields = ("kind", "label", "created_at")
    readonly_fields = ("kind", "label", "created_at")
    extra = 0
    can_delete = False


@admin.register(Album)
class AlbumAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "created_at")
    search_fields = ("name", "owner__username")
    readonly_fields = ("id", "owner", "fingerprint", "created_at")
    fields = ("id", "name", "owner", "fingerprint", "created_at")
    inlines: ClassVar = [AlbumKeySlotInline]


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ("id", "album", "status", "faces", "created_at")
    list_filter = ("status",)
    fields = ("id", "album", "status", "progress", "failure_reason", "retryable", "faces", "format", "width", "height")
    readonly_fields = fields
