"""Redis going away and coming back: a page says so instead of failing, make run starts what
ended again, and a worker that starts fails the photos whose uploads were lost."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from webapp import texts, workers
from webapp.albums import tasks, transit
from webapp.albums.lost import GRACE, requeue_orphaned
from webapp.albums.models import Photo
from webapp.processes import Supervisor

from .factories import AlbumFactory, PhotoFactory

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_away(settings: Any) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": DEAD_REDIS}}


@pytest.mark.django_db
def test_a_page_that_needs_redis_while_it_is_away_says_so_and_that_nothing_is_lost(
    client: Client, redis_away: None
) -> None:
    response = client.post("/accounts/signup/", {"username": "ann"})  # its allowance lives in Redis
    assert response.status_code == 503 and response["Retry-After"] == "30"
    page = response.content.decode()
    assert "Your photos are safe" in page and "Traceback" not in page


@pytest.mark.django_db
def test_the_api_says_the_same_as_json(client: Client, redis_away: None) -> None:
    response = client.post("/api/auth/token/", {"username": "ann", "password": "x"})
    assert response.status_code == 503
    assert response.json() == {"detail": texts.TEMPORARILY_UNAVAILABLE}


@pytest.mark.django_db
def test_a_starting_worker_fails_the_photos_whose_uploads_are_gone(user: Any) -> None:
    album = AlbumFactory(owner=user)
    lost, waiting, fresh = (PhotoFactory(album=album) for _ in range(3))
    Photo.objects.filter(pk__in=[lost.pk, waiting.pk]).update(created_at=timezone.now() - timedelta(seconds=GRACE + 1))
    transit.put_upload(waiting.pk, b"sealed bytes waiting for a worker")

    tasks.on_worker_ready()  # what Celery's worker_ready signal runs

    state = {p.pk: (p.status, p.failure_reason, p.retryable) for p in Photo.objects.all()}
    assert state[lost.pk] == ("failed", texts.UPLOAD_LOST, False)
    assert state[waiting.pk][0] == state[fresh.pk][0] == "queued"


def test_the_supervisor_starts_an_ended_child_again_but_not_a_crash_loop() -> None:
    with Supervisor() as supervisor:
        first = supervisor.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
        first.kill()
        first.wait()
        assert supervisor.restart_exited() is None
        again = supervisor.children["sleeper"]
        assert again.pid != first.pid and again.poll() is None

        supervisor.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"], {})
        verdict = None
        deadline = time.monotonic() + 30
        while verdict is None and time.monotonic() < deadline:
            time.sleep(0.2)
            verdict = supervisor.restart_exited(most=3)
        assert verdict == ("crasher", 3)
        assert supervisor.children["sleeper"].poll() is None  # the others keep running


@pytest.mark.django_db
def test_photos_whose_worker_died_are_queued_again_and_no_others(user: Any, fresh_redis: Any, monkeypatch: Any) -> None:
    album = AlbumFactory(owner=user)
    orphan, busy, just_claimed, waiting = (PhotoFactory(album=album) for _ in range(4))
    long_ago = timezone.now() - timedelta(seconds=workers.ALIVE_FOR + 1)
    Photo.objects.filter(pk=orphan.pk).update(status="detecting", claimed_by="dead" * 8)
    Photo.objects.filter(pk=just_claimed.pk).update(status="detecting", claimed_by="dead" * 8)
    Photo.objects.filter(pk=busy.pk).update(status="anonymizing", claimed_by=workers.BOOT)
    Photo.objects.filter(pk__in=[orphan.pk, busy.pk]).update(updated_at=long_ago)  # update() leaves auto_now alone
    workers.beat()  # this process is the live worker that has the busy photo
    queued = fresh_redis.llen("celery")

    assert requeue_orphaned(Photo.objects.all()) == 1

    state = {p.pk: (p.status, p.claimed_by) for p in Photo.objects.all()}
    assert state[orphan.pk] == ("queued", None)
    assert state[busy.pk] == ("anonymizing", workers.BOOT)
    assert state[just_claimed.pk] == ("detecting", "dead" * 8)  # may still be moving: not yet
    assert state[waiting.pk] == ("queued", None)
    assert fresh_redis.llen("celery") == queued + 1  # one task, for the orphan
    assert requeue_orphaned(Photo.objects.all()) == 0  # and only once

    workers.stopped()
    assert workers.alive_count() == 0
