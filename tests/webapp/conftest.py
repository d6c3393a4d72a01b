"""Fixtures of the web app tests: the test Redis database (14, flushed per test), a scratch
MEDIA_ROOT, users and logged-in clients, and a real Celery worker process for the integration
tests. Settings come from pyproject's pytest ``env``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client

from cipher_worker import keys
from webapp.processes import Supervisor, worker_command

from .factories import UserFactory
from .helpers import Worker, database_url

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
def fresh_redis(request: pytest.FixtureRequest, redis_db: redis.Redis) -> redis.Redis:
    # Not for a test with a real worker: the worker's queue bindings live in this database. Worker
    # tests are transactional, and pytest-django runs those after all others.
    if "worker" not in request.fixturenames:
        redis_db.flushdb()
    return redis_db


# Tests check what is done with passwords, not how hard they are to guess: Django's PBKDF2 and
# the key slots' Argon2id (64 MiB) at their real cost took most of the suite's time. Slots
# record their own parameters, so whatever a cheap slot is opened by reads them from the slot.
CHEAP_KDF = keys.KdfParams(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_work(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(keys, "DEFAULT_KDF", CHEAP_KDF)


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


# --- a real Celery worker (integration tests) ----------------------------------------------
# ``fresh_redis`` does not flush for a test that uses ``worker``, so the running worker keeps
# its queue bindings.


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """Extra environment for the module's worker (a module overrides this to pick another codec)."""
    return {}


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None,
    redis_db: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
    worker_env: dict[str, str],
) -> Iterator[Worker]:
    """``celery -A webapp worker`` (prefork, one child that loads the model at worker_process_init)
    on the real Redis broker and the test database, with its own MEDIA_ROOT."""
    redis_db.flushdb()
    scratch = tmp_path_factory.mktemp("worker")
    media_root, log = scratch / "media", scratch / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "MEDIA_ROOT": str(media_root),
        **worker_env,
    }
    extra = ["--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"tests-{os.getpid()}@%h"]
    with Supervisor() as supervisor:
        process = supervisor.start("worker", worker_command(extra=extra), env, log=log)
        yield Worker(process, media_root, log, supervisor)
        supervisor.stop("worker", grace=30)  # a warm shutdown, pool processes included
