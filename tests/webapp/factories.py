from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from factory.django import DjangoModelFactory, Password

from webapp.albums.models import Album, Photo

PASSWORD = "correct horse battery staple"
PASSPHRASE = "our summer of 1998"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = Password(PASSWORD)
    # an account of some standing; tests of what new accounts may do say date_joined=now
    date_joined = factory.LazyFunction(lambda: timezone.now() - timedelta(days=30))


class AlbumFactory(DjangoModelFactory):
    """An album made the way the app makes one (key pair, owner slot); ``passphrase`` is optional."""

    class Meta:
        model = Album

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Album {n}")

    @classmethod
    def _create(cls, model_class: type[Album], *args: Any, **kwargs: Any) -> Album:
        passphrase = kwargs.pop("passphrase", PASSPHRASE)
        return model_class.objects.create_with_passphrase(passphrase=passphrase, **kwargs)


class PhotoFactory(DjangoModelFactory):
    class Meta:
        model = Photo

    album = factory.SubFactory(AlbumFactory)
    status = Photo.Status.QUEUED
