"""What one account may keep, and what it may have waiting for a worker.

Kept: a number of photos and the bytes their stored files take, over all the owner's albums
(VEIL_PHOTO_QUOTA, VEIL_STORAGE_QUOTA_MB; 0 for no limit). A queued photo counts with its
upload's size (about what its anonymized copy will take; a stored one with its files and its
recovery envelope), and so does a failed one that can be
tried again (its upload waits in Redis for that); any other failed one counts with nothing.

Waiting: uploads sit sealed in Redis until a worker takes them, and Redis is capped without
eviction, so the photos one account has queued are limited (VEIL_MAX_WAITING_PHOTOS, and
VEIL_MAX_WAITING_MB of uploads), and so are everyone's together (VEIL_MAX_WAITING_MB_ALL, kept
below Redis' memory cap); when that is full, accounts over their share of it wait, and past a
quarter more everyone does. Accounts made in the last VEIL_NEW_ACCOUNT_HOURS (24) together have
at most half of it: throwaway accounts signed up for an attack cannot fill it and shut out the
families already here. Over these an upload is asked to wait (429) rather than refused for
good. A failed photo that can be tried again counts as waiting too, since its upload still sits
in Redis: failures cannot pile uploads up there. Only photos queued within the transit TTL count:
an older one's upload has expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce, Length
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from .models import Photo

MB = 1024 * 1024
_OVERDRAFT = 1.25  # how far past VEIL_MAX_WAITING_MB_ALL accounts within their share may go
_NEWCOMERS = 0.5  # the part of it that accounts younger than VEIL_NEW_ACCOUNT_HOURS share
BUSY = "Veil is busy with many photos right now; this one follows in a moment."


@dataclass(frozen=True)
class Usage:
    photos: int
    stored_bytes: int
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
        if self.byte_limit and self.stored_bytes + more_bytes > self.byte_limit:
            return (
                f"Your photos take {filesizeformat(self.stored_bytes)} of your {filesizeformat(self.byte_limit)}; "
                "these do not fit. Delete some photos to upload more."
            )
        return None

    def refusal_after_storing(self, reserved: int, *files: bytes) -> str | None:
        """Why a photo that counted ``reserved`` bytes while queued does not fit as ``files``."""
        stored = self.stored_bytes - reserved + sum(len(f) for f in files)
        if self.byte_limit and stored > self.byte_limit:
            return (
                f"anonymized, this photo no longer fits in your {filesizeformat(self.byte_limit)} of storage; "
                "delete some photos and upload it again"
            )
        return None


def usage(owner_id: int) -> Usage:
    totals = Photo.objects.owned_by(owner_id).aggregate(
        photos=Count("pk"),
        # the recovery envelope too: with big faces it can outweigh the photo
        bytes=Coalesce(Sum("image_bytes"), 0)
        + Coalesce(Sum("thumbnail_bytes"), 0)
        + Coalesce(Sum(Length("envelope")), 0),
    )
    return Usage(totals["photos"], totals["bytes"], settings.VEIL_PHOTO_QUOTA, settings.VEIL_STORAGE_QUOTA_MB * MB)


def backlog_refusal(owner_id: int, more_photos: int, more_bytes: int) -> str | None:
    """Why these uploads must wait until earlier ones are anonymized, or None if they may queue now."""
    since = timezone.now() - timedelta(seconds=settings.VEIL_TRANSIT_TTL)
    in_redis = Q(status__in=Photo.IN_PROGRESS) | Q(status=Photo.Status.FAILED, retryable=True)
    waiting = Photo.objects.filter(in_redis, created_at__gte=since)
    mine = waiting.filter(album__owner_id=owner_id).aggregate(photos=Count("pk"), bytes=Coalesce(Sum("image_bytes"), 0))
    if mine["photos"] + more_photos > settings.VEIL_MAX_WAITING_PHOTOS or (
        mine["bytes"] + more_bytes > settings.VEIL_MAX_WAITING_MB * MB
    ):
        return (
            f"{mine['photos']} of your photos are still waiting to be anonymized; this one follows once some are done."
        )
    cap = settings.VEIL_MAX_WAITING_MB_ALL * MB
    joined = timezone.now() - timedelta(hours=settings.VEIL_NEW_ACCOUNT_HOURS)
    if get_user_model().objects.filter(pk=owner_id, date_joined__gt=joined).exists():
        newcomers = waiting.filter(album__owner__date_joined__gt=joined)
        if newcomers.aggregate(bytes=Coalesce(Sum("image_bytes"), 0))["bytes"] + more_bytes > cap * _NEWCOMERS:
            return BUSY
    everyone = waiting.aggregate(bytes=Coalesce(Sum("image_bytes"), 0), accounts=Count("album__owner", distinct=True))
    total = everyone["bytes"] + more_bytes
    if total > cap:
        # Past the cap only accounts within their share go on, so a few busy ones never stop the
        # rest, and only up to a quarter more: the cap stays a ceiling, well below Redis' memory.
        share = cap / (everyone["accounts"] + (0 if mine["photos"] else 1))
        if mine["bytes"] + more_bytes > share or total > cap * _OVERDRAFT:
            return BUSY
    return None


def lock_account(owner_id: int) -> None:
    """Hold the owner's row until the transaction ends, so two uploads at once cannot both take
    the last of the quota (a no-op on SQLite, whose writes are serialised anyway)."""
    get_user_model().objects.select_for_update().filter(pk=owner_id).exists()
