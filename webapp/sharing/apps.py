from __future__ import annotations

from django.apps import AppConfig


class SharingConfig(AppConfig):
    name = "webapp.sharing"
    label = "sharing"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the receivers)
