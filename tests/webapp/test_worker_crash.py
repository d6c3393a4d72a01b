"""A worker killed mid-photo: the task comes back by itself once; a photo that kills its worker
again ends failed and retryable, with nothing half-stored, and a retry then finishes it.

The kill is real: SIGKILL to the prefork pool process of a real Celery worker while it is
anonymizing a 20 MP photo."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client
from django.urls import reverse
from PIL import Image

from tests.helpers import DATA
from webapp.albums import transit
from webapp.albums.tasks import WORKER_LOST

from .factories import AlbumFactory
from .helpers import WAIT, Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fresh_redis(redis_db: redis.Redis) -> redis.Redis:
    # the running worker's queue bindings live in this database: no per-test flush
    return redis_db


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    """A 20 MP JPEG with a face: slow enough to be caught mid-work."""
    image = Image.open(DATA / "person_a_2.jpg").convert("RGB").resize((4000, 5000))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def pool_process(worker: Worker) -> int:
    """The pid of the worker's (single) prefork child, once it is up."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    pytest.fail(f"the worker started no pool process:\n{worker.output()}")


def kill_while_working(worker: Worker, photo_id: str, attempt: int, redis_db: redis.Redis) -> None:
    """SIGKILL the pool process as soon as it has started its ``attempt``-th run of the photo."""
    deadline = time.monotonic() + WAIT
    while int(redis_db.get(transit.attempts_key(photo_id)) or 0) < attempt:
        assert time.monotonic() < deadline, f"attempt {attempt} never started:\n{worker.output()}"
        time.sleep(0.01)
    os.kill(pool_process(worker), signal.SIGKILL)


def upload(client: Client, album: Any, data: bytes) -> str:
    response = client.post(
        reverse("albums:upload", args=[album.pk]), {"photos": io.BytesIO(data)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201, response.content
    return str(response.json()["photos"][0]["photo_id"])


def stored_files(worker: Worker) -> set[str]:
    return {p.name for p in worker.media_root.rglob("*") if p.is_file()}


def test_a_worker_killed_once_gets_the_photo_back_and_finishes_it(
    worker: Worker, owner_client: Client, user: Any, settings: Any, big_photo: bytes, redis_db: redis.Redis
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    before = stored_files(worker)
    photo_id = upload(owner_client, AlbumFactory(owner=user), big_photo)
    kill_while_working(worker, photo_id, 1, redis_db)

    photo = worker.wait_for_photo(photo_id)
    assert (photo.status, photo.faces) == ("done", 1), (photo.failure_reason, worker.output())
    assert len(stored_files(worker) - before) == 2  # the photo and its thumbnail, once
    # the worker drops the sealed upload just after committing the row, so give it a moment
    deadline = time.monotonic() + 5
    while transit.has_upload(photo_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not transit.has_upload(photo_id)


def test_a_photo_that_kills_its_worker_twice_fails_retryable_and_a_retry_finishes_it(
    worker: Worker, owner_client: Client, user: Any, settings: Any, big_photo: bytes, redis_db: redis.Redis
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    before = stored_files(worker)
    photo_id = upload(owner_client, AlbumFactory(owner=user), big_photo)
    kill_while_working(worker, photo_id, 1, redis_db)
    kill_while_working(worker, photo_id, 2, redis_db)  # the task came back to a fresh pool process

    photo = worker.wait_for_photo(photo_id)
    assert (photo.status, photo.retryable, photo.failure_reason) == ("failed", True, WORKER_LOST), worker.output()
    assert stored_files(worker) == before and not photo.image and photo.envelope is None  # nothing half-stored
    assert transit.has_upload(photo_id)  # the sealed upload waits for the retry

    response = owner_client.post(reverse("albums:photo-retry", args=[photo_id]), HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    photo = worker.wait_for_photo(photo_id)
    assert (photo.status, photo.faces) == ("done", 1), (photo.failure_reason, worker.output())


def test_a_whole_worker_killed_mid_photo_gets_it_queued_again_within_seconds(
    worker: Worker, owner_client: Client, user: Any, settings: Any, big_photo: bytes, redis_db: redis.Redis
) -> None:
    """Its main process too: the broker would hold the task until its visibility timeout (minutes),
    but the photo's claim names a worker that is no longer alive, so the next one queues it again."""
    settings.MEDIA_ROOT = str(worker.media_root)
    photo_id = upload(owner_client, AlbumFactory(owner=user), big_photo)
    deadline = time.monotonic() + WAIT
    while int(redis_db.get(transit.attempts_key(photo_id)) or 0) < 1:
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.01)
    killed = time.monotonic()
    worker.kill_and_start_again()

    photo = worker.wait_for_photo(photo_id)
    assert (photo.status, photo.faces, photo.claimed_by) == ("done", 1, None), (photo.failure_reason, worker.output())
    assert time.monotonic() - killed < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] / 4
