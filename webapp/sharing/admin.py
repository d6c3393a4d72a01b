from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import UnlockAttempt


@admin.register(UnlockAttempt)
class UnlockAttemptAdmin(admin.ModelAdmin):
    list_display = ("created_at", "album", "slot_label", "outcome", "via")
    list_filter = ("outcome", "via")
    search_fields = ("album__name", "slot_label")
    fields = ("album", "slot", "slot_label", "outcome", "via", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a log: written by unlocks only
