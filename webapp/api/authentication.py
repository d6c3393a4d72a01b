"""API tokens that stop working ``VEIL_TOKEN_DAYS`` after they were made (DRF's tokens never do)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

EXPIRED = "This API token has expired; make a new one on the API token page or at /api/auth/token/."


def expires_at(token: Token) -> datetime:
    return token.created + timedelta(days=settings.VEIL_TOKEN_DAYS)


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        user, token = super().authenticate_credentials(key)
        if expires_at(token) <= timezone.now():
            token.delete()  # an expired token is gone for good, not merely refused
            raise AuthenticationFailed(EXPIRED)
        return user, token
