"""Stored sizes move from the dashboard's own table onto the photo (albums 0005), where the
account's storage quota reads them too."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def copy_sizes(apps: Any, schema_editor: Any) -> None:
    Photo = apps.get_model("albums", "Photo")
    StoredPhotoSize = apps.get_model("dashboard", "StoredPhotoSize")
    for size in StoredPhotoSize.objects.iterator():
        Photo.objects.filter(pk=size.photo_id).update(
            image_bytes=size.image_bytes, thumbnail_bytes=size.thumbnail_bytes
        )


class Migration(migrations.Migration):
    dependencies = [
        ("albums", "0005_photo_stored_bytes"),
        ("dashboard", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(copy_sizes, migrations.RunPython.noop),
        migrations.DeleteModel(name="StoredPhotoSize"),
    ]
