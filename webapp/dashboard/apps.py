from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "webapp.dashboard"
    label = "dashboard"

    def ready(self) -> None:
        # Every process that loads Django (web, Celery worker and its pool children) records tasks.
        from . import signals

        signals.connect()
