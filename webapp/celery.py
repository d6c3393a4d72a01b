"""The Celery app. Workers: ``celery -A webapp worker`` (see ``webapp/run.py``)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("veil")
# Every CELERY_* setting of webapp.settings, so the broker and the task options live in one place.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
