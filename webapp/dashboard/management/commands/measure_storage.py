"""``manage.py measure_storage``: record the stored size of finished photos stored before Veil
recorded sizes (the worker records them as it stores each photo)."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand

from webapp.albums.models import Photo


class Command(BaseCommand):
    help = "Measure (through the media storage) the image and thumbnail of every finished photo not yet measured."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--all", action="store_true", help="measure every finished photo again")

    def handle(self, *args: Any, **options: Any) -> None:
        photos = Photo.objects.filter(status=Photo.Status.DONE).only("image", "thumbnail")
        if not options["all"]:
            photos = photos.filter(thumbnail_bytes__isnull=True)
        total = count = 0
        for photo in photos.iterator():
            sizes = {
                "image_bytes": default_storage.size(photo.image.name) if photo.image.name else 0,
                "thumbnail_bytes": default_storage.size(photo.thumbnail.name) if photo.thumbnail.name else 0,
            }
            Photo.objects.filter(pk=photo.pk).update(**sizes)
            total += sum(sizes.values())
            count += 1
        self.stdout.write(f"measured {count} photo{'s' if count != 1 else ''}: {total} bytes")
