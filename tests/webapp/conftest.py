"""Fixtures of the web app tests: the test Redis database (14, flushed per test), a scratch
MEDIA_ROOT, users and logged-in clients. Settings come from pyproject's pytest ``env``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from .factories import UserFactory

TEST_REDIS_DB = 14


@pytest.fixture(scope="session")
def redis_db() -> redis.Redis:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    index = client.connection_pool.connection_kwargs.get("db")
    if index != TEST_REDIS_DB:  # never flush a database the tests do not own
        pytest.exit(f"the web app tests flush Redis database {TEST_REDIS_DB}, but REDIS_URL points at {index}")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"the web app tests need the Redis at {django_settings.REDIS_URL}")
    return client


@pytest.fixture(autouse=True)
def fresh_redis(redis_db: redis.Redis) -> redis.Redis:
    redis_db.flushdb()
    return redis_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def user(db: None) -> AbstractBaseUser:
    return UserFactory()


@pytest.fixture
def owner_client(client: Client, user: AbstractBaseUser) -> Client:
    client.force_login(user)
    return client
