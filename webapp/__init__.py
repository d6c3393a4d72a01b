"""Veil's web app: Django project, Celery app and the apps under it."""

from __future__ import annotations

from .celery import app as celery_app

__all__ = ["celery_app"]
