"""The unlock log the owner reads: who tried to open an album, when, and how it went (never with what)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from webapp.albums.models import Album, AlbumKeySlot


class UnlockAttempt(models.Model):
    class Outcome(models.TextChoices):
        SUCCESS = "success", "Unlocked"
        WRONG_PASSWORD = "wrong_password", "Wrong password"
        RATE_LIMITED = "rate_limited", "Refused: too many tries"
        EXPIRED = "expired", "Refused: access expired"
        REVOKED = "revoked", "Refused: recipient removed"

    FAILURES: ClassVar[frozenset[str]] = frozenset(
        {Outcome.WRONG_PASSWORD, Outcome.RATE_LIMITED, Outcome.EXPIRED, Outcome.REVOKED}
    )

    class Via(models.TextChoices):
        SHARE_LINK = "share_link", "Share link"
        ALBUM_PAGE = "album_page", "Owner's album page"

    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="unlock_attempts")
    # The slot is gone once its recipient is revoked; its name stays in slot_label.
    slot = models.ForeignKey(
        AlbumKeySlot, on_delete=models.SET_NULL, null=True, blank=True, related_name="unlock_attempts"
    )
    slot_label = models.CharField(max_length=120, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    via = models.CharField(max_length=16, choices=Via.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at"]
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["album", "-created_at"])]

    def __str__(self) -> str:
        who = self.slot_label or "a removed recipient"
        return f"{who}: {self.get_outcome_display()} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def failed(self) -> bool:
        return self.outcome in self.FAILURES
