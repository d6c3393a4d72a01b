"""What one account may keep: a number of photos and the bytes their stored files take.

Counted over all the owner's albums. A queued photo counts with its upload's size (about what
its anonymized copy will take), a failed one with nothing. Settings: VEIL_PHOTO_QUOTA and
VEIL_STORAGE_QUOTA_MB (0 for no limit).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce
from django.template.defaultfilters import filesizeformat

from .models import Photo

MB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    photos: int
    bytes: int
    photo_limit: int  # 0: no limit
    byte_limit: int  # 0: no limit

    def refusal(self, more_photos: int, more_bytes: int) -> str | None:
        """Why ``more_photos`` uploads of ``more_bytes`` in all do not fit, or None if they do."""
        if self.photo_limit and self.photos + more_photos > self.photo_limit:
            room = max(0, self.photo_limit - self.photos)
            return (
                f"Your account holds {self.photos} of its {self.photo_limit} photos, so {room} more fit; "
                "delete some photos to upload more."
            )
        if self.byte_limit and self.bytes + more_bytes > self.byte_limit:
            return (
                f"Your photos take {filesizeformat(self.bytes)} of your {filesizeformat(self.byte_limit)}; "
                "these do not fit. Delete some photos to upload more."
            )
        return None

    @property
    def summary(self) -> str:
        """One line for the album page, e.g. "12 of 10000 photos · 31.2 MB of 20.0 GB"."""
        noun = "photo" if (self.photo_limit or self.photos) == 1 else "photos"
        photos = f"{self.photos} of {self.photo_limit} {noun}" if self.photo_limit else f"{self.photos} {noun}"
        size = filesizeformat(self.bytes)
        stored = f"{size} of {filesizeformat(self.byte_limit)}" if self.byte_limit else size
        return f"{photos} · {stored} used"


def usage(owner_id: int) -> Usage:
    totals = Photo.objects.owned_by(owner_id).aggregate(
        photos=Count("pk"),
        bytes=Coalesce(Sum("image_bytes"), 0) + Coalesce(Sum("thumbnail_bytes"), 0),
    )
    return Usage(totals["photos"], totals["bytes"], settings.VEIL_PHOTO_QUOTA, settings.VEIL_STORAGE_QUOTA_MB * MB)


def lock_account(owner_id: int) -> None:
    """Hold the owner's row until the transaction ends, so two uploads at once cannot both take
    the last of the quota (a no-op on SQLite, whose writes are serialised anyway)."""
    get_user_model().objects.select_for_update().filter(pk=owner_id).exists()
