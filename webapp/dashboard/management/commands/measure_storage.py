"""``manage.py measure_storage``: record the stored size of finished photos the dashboard has not measured."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webapp.albums.models import Photo
from webapp.dashboard.signals import measure_stored_size


class Command(BaseCommand):
    help = "Measure (through the media storage) the image and thumbnail of every finished photo not yet measured."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--all", action="store_true", help="measure every finished photo again")

    def handle(self, *args: Any, **options: Any) -> None:
        photos = Photo.objects.filter(status=Photo.Status.DONE).only("image", "thumbnail")
        if not options["all"]:
            photos = photos.filter(stored_size__isnull=True)
        total = count = 0
        for photo in photos.iterator():
            stored = measure_stored_size(photo)
            total += stored.image_bytes + stored.thumbnail_bytes
            count += 1
        self.stdout.write(f"measured {count} photo{'s' if count != 1 else ''}: {total} bytes")
