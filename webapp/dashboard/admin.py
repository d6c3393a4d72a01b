from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import TaskRecord, WorkerHeartbeat


class RecordAdmin(admin.ModelAdmin):
    """Records written by the system: staff read and delete them, never edit them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(TaskRecord)
class TaskRecordAdmin(RecordAdmin):
    list_display = ("task_id", "name", "state", "photo_id", "worker", "queued_at", "duration", "faces")
    list_filter = ("state", "name", "worker")
    search_fields = ("task_id", "photo__id", "failure_reason")
    date_hierarchy = "queued_at"


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(RecordAdmin):
    list_display = ("hostname", "pid", "started_at", "last_seen", "stopped_at")
    search_fields = ("hostname",)
