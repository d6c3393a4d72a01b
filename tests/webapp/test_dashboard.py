"""The staff dashboard, its panels, the Celery-signal task records and the admin."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import DatabaseError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image
from redis.backoff import NoBackoff
from redis.retry import Retry

from cipher_worker.pipeline import AnonymizedPhoto
from tests.helpers import DATA
from webapp import texts
from webapp.albums import tasks, transit
from webapp.albums.models import Photo
from webapp.albums.uploads import accept_upload
from webapp.dashboard import panels, signals
from webapp.dashboard.models import TaskRecord, WorkerHeartbeat

from .factories import AlbumFactory, PhotoFactory, UserFactory
from .helpers import Worker

pytestmark = pytest.mark.django_db

DASHBOARD = "/dashboard/"


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def staff_client(db: None) -> Client:
    staff = Client()
    staff.force_login(UserFactory(username="operator", is_staff=True))
    return staff


def record(**fields: Any) -> TaskRecord:
    fields.setdefault("task_id", f"task-{TaskRecord.objects.count()}")
    fields.setdefault("name", "albums.anonymize_photo")
    return TaskRecord.objects.create(**fields)


# --- access -------------------------------------------------------------------------------


def test_the_dashboard_is_for_staff_only(owner_client: Client, staff_client: Client) -> None:
    anonymous = Client().get(DASHBOARD)
    assert anonymous.status_code == 302 and anonymous.url == f"{reverse('accounts:login')}?next={DASHBOARD}"
    assert owner_client.get(DASHBOARD).status_code == 404

    page = staff_client.get(DASHBOARD)
    assert page.status_code == 200
    for title in ("Queue", "Faces anonymized per hour", "Workers", "Running tasks", "Failed tasks", "Storage used"):
        assert title in page.content.decode()


# --- panels -------------------------------------------------------------------------------


def test_the_panels_show_what_the_workers_are_doing(staff_client: Client, fresh_redis: redis.Redis) -> None:
    now = timezone.now()
    album = AlbumFactory()
    done = PhotoFactory(album=album, status=Photo.Status.DONE, faces=3, image_bytes=2_000_000, thumbnail_bytes=40_000)
    failed = PhotoFactory(album=album, status=Photo.Status.FAILED, failure_reason="the file is empty")
    PhotoFactory(album=album, status=Photo.Status.ANONYMIZING)
    PhotoFactory(album=album)
    record(photo=done, state="succeeded", worker="w1@box", faces=3, finished_at=now - timedelta(minutes=5))
    record(photo=failed, state="failed", worker="w1@box", finished_at=now, failure_reason="the file is empty")
    record(state="running", worker="w2@box", started_at=now - timedelta(seconds=20))
    WorkerHeartbeat.objects.create(hostname="w1@box", pid=41, started_at=now - timedelta(hours=2), last_seen=now)
    WorkerHeartbeat.objects.create(
        hostname="w2@box", started_at=now - timedelta(hours=2), last_seen=now - timedelta(minutes=5)
    )
    for i in range(3):  # three messages waiting in the Celery queue, one in a priority sub-queue
        fresh_redis.rpush("celery" if i else "celery\x06\x163", json.dumps({"n": i}))

    page = staff_client.get(DASHBOARD).content.decode()

    assert 'data-queue-depth="3"' in page
    assert 'data-status-count="done">1<' in page and 'data-status-count="queued">1<' in page
    assert 'data-status-count="anonymizing">1<' in page and 'data-status-count="failed">1<' in page
    assert 'data-bytes="2040000"' in page and "1.9\xa0MB" in page
    assert 'data-faces="3"' in page and ">3</p>" in page  # the bar of this hour, and the 24 h total
    running = section(page, "running-panel")
    assert "w2@box" in running and "not heard from" in running
    failed_panel = section(page, "failed-panel")
    assert "the file is empty" in failed_panel and reverse("admin:albums_photo_change", args=[failed.pk]) in page
    workers = section(page, "workers-panel")
    assert re.search(r"w1@box.*?badge-done\">alive", workers, re.S)
    assert re.search(r"w2@box.*?badge-failed\">silent", workers, re.S)
    assert "No failed unlock attempts." in section(page, "unlocks-panel")


def test_the_page_costs_the_same_few_queries_however_many_rows(
    staff_client: Client, django_assert_max_num_queries: Any
) -> None:
    album = AlbumFactory()

    def seed(n: int) -> None:
        now = timezone.now()
        for _ in range(n):
            photo = PhotoFactory(album=album, status=Photo.Status.DONE, faces=1, image_bytes=10, thumbnail_bytes=1)
            record(photo=photo, state="failed", failure_reason="x", finished_at=now)
            record(photo=photo, state="running", started_at=now, worker="w")
            record(photo=photo, state="succeeded", faces=1, finished_at=now)

    seed(1)
    with django_assert_max_num_queries(10) as few:
        staff_client.get(DASHBOARD)
    seed(30)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert staff_client.get(DASHBOARD).status_code == 200


def test_faces_per_hour_counts_succeeded_tasks_of_the_last_24_hours() -> None:
    now = timezone.now().replace(minute=30)
    record(state="succeeded", faces=3, finished_at=now - timedelta(hours=1))
    record(state="succeeded", faces=2, finished_at=now - timedelta(hours=1, minutes=20))
    record(state="succeeded", faces=1, finished_at=now)
    record(state="succeeded", faces=9, finished_at=now - timedelta(hours=30))  # too old
    record(state="failed", faces=None, finished_at=now)

    bars = panels.faces_per_hour(now)

    assert len(bars) == 24 and bars[-1].hour == now.replace(minute=0, second=0, microsecond=0)
    assert [(b.faces, b.photos, b.percent) for b in bars[-2:]] == [(5, 2, 100), (1, 1, 20)]
    assert sum(b.faces for b in bars) == 6


def test_the_queue_panel_says_so_when_redis_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = redis.Redis(port=1, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(transit, "client", lambda: nobody)
    assert panels.queue_depth() == panels.QueueDepth(None, None)


def test_older_photos_are_measured_by_the_command(staff_client: Client) -> None:
    photo = PhotoFactory(
        status=Photo.Status.DONE,
        image=default_storage.save("photos/a/x.jpg", ContentFile(b"i" * 1000)),
        thumbnail=default_storage.save("photos/a/x.thumb.jpg", ContentFile(b"t" * 100)),
    )
    assert "1 older photo not measured yet" in staff_client.get(DASHBOARD).content.decode()

    call_command("measure_storage", stdout=io.StringIO())

    photo.refresh_from_db()
    assert (photo.image_bytes, photo.thumbnail_bytes) == (1000, 100)
    page = staff_client.get(DASHBOARD).content.decode()
    assert 'data-bytes="1100"' in page and "not measured" not in page


# --- task records from Celery signals (eager runs; the real worker is at the end) ----------


def test_publishing_a_photo_task_records_it_as_queued(user: Any, django_capture_on_commit_callbacks: Any) -> None:
    album = AlbumFactory(owner=user)
    with django_capture_on_commit_callbacks(execute=True):
        photo = accept_upload(album, jpeg())

    task = TaskRecord.objects.get()
    assert (task.name, task.photo, task.state) == ("albums.anonymize_photo", photo, "queued")
    assert task.queued_at is not None and task.started_at is None


def test_bookkeeping_that_fails_never_stops_an_upload(
    user: Any, fresh_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    def broken(*_: Any) -> None:
        raise DatabaseError("the dashboard's table is locked")

    monkeypatch.setattr(signals, "photo_id_of", broken)
    with django_capture_on_commit_callbacks(execute=True):
        photo = accept_upload(AlbumFactory(owner=user), jpeg())

    assert fresh_redis.llen("celery") == 1 and transit.has_upload(photo.pk)
    assert not TaskRecord.objects.exists()


def test_a_photo_the_task_marks_failed_is_a_failed_task_with_the_photos_reason(user: Any) -> None:
    photo = PhotoFactory(album=AlbumFactory(owner=user))  # its upload is not in transit: expired

    result = tasks.anonymize_photo.apply(args=[str(photo.pk)])

    task = TaskRecord.objects.get(task_id=result.id)
    assert (task.state, task.photo, task.failure_reason) == ("failed", photo, texts.UPLOAD_EXPIRED)
    assert task.worker and task.duration is not None and task.finished_at is not None


def test_a_task_that_raises_is_failed_with_the_exception(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost_database(photo_id: str) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(tasks.PhotoJob, "for_id", lost_database)
    photo = PhotoFactory(album=AlbumFactory(owner=user))

    result = tasks.anonymize_photo.apply(args=[str(photo.pk)])

    task = TaskRecord.objects.get(task_id=result.id)
    assert (task.state, task.failure_reason) == ("failed", "RuntimeError: the database went away")


def test_a_stored_photo_records_its_faces_and_stored_size(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    image = jpeg(800, 600)

    def anonymize(data: bytes, public: bytes, **_: Any) -> AnonymizedPhoto:
        faces: list[Any] = [object(), object()]  # two faces; the task only counts them
        return AnonymizedPhoto(image=image, format="JPEG", envelope=b"e", faces=faces, size=(800, 600))

    monkeypatch.setattr(tasks.cipher_api, "get_pipeline", lambda: None)
    monkeypatch.setattr(tasks.cipher_api, "anonymize_photo", anonymize)
    photo = PhotoFactory(album=AlbumFactory(owner=user))
    transit.put_upload(photo.pk, jpeg())

    result = tasks.anonymize_photo.apply(args=[str(photo.pk)])

    photo.refresh_from_db()
    task = TaskRecord.objects.get(task_id=result.id)
    assert (photo.status, task.state, task.faces) == ("done", "succeeded", 2)
    assert photo.image_bytes == len(image) == default_storage.size(photo.image.name)
    assert photo.thumbnail_bytes == default_storage.size(photo.thumbnail.name) > 0


def test_recovering_a_photos_faces_for_an_unlock_does_not_count_them_again(user: Any) -> None:
    from webapp.sharing.tasks import recover_photo

    photo = PhotoFactory(album=AlbumFactory(owner=user), status=Photo.Status.DONE, faces=3)
    # its sealed unlock request has expired: the worker reports that to the page and is done
    result = recover_photo.apply(args=[str(photo.pk), "gone", "test.channel", "session"])

    task = TaskRecord.objects.get(task_id=result.id)
    assert task.state == "succeeded" and task.faces is None
    assert sum(bar.faces for bar in panels.faces_per_hour()) == 0


# --- the admin ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "albums_album",
        "albums_albumkeyslot",
        "albums_photo",
        "dashboard_taskrecord",
        "dashboard_workerheartbeat",
    ],
)
def test_the_admin_lists_every_model(admin_client: Client, model: str) -> None:
    photo = PhotoFactory(status=Photo.Status.DONE, image_bytes=1, thumbnail_bytes=1)
    record(photo=photo, state="succeeded")
    WorkerHeartbeat.objects.create(hostname="w@box", started_at=timezone.now(), last_seen=timezone.now())

    page = admin_client.get(reverse(f"admin:{model}_changelist"))

    assert page.status_code == 200


def finished_record(photo: Photo, wait: float = 30.0) -> TaskRecord:
    """The photo's task record once task_success has filled it (just after the photo is done)."""
    deadline = time.monotonic() + wait
    while (task := TaskRecord.objects.get(photo=photo)).finished_at is None:
        assert time.monotonic() < deadline, f"the task record is still {task.state}"
        time.sleep(0.1)
    return task


def section(page: str, panel_id: str) -> str:
    start = page.index(f'id="{panel_id}"')
    return page[start : page.index("</section>", start)]


# --- a real worker (a transactional test: pytest-django runs it after the others) ----------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_run_leaves_a_task_record_and_a_heartbeat(
    worker: Worker, user: Any, settings: Any, client: Client
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    photo = accept_upload(AlbumFactory(owner=user), (DATA / "person_a_2.jpg").read_bytes())

    photo = worker.wait_for_photo(str(photo.pk))

    assert photo.status == "done", worker.output()
    task = finished_record(photo)
    hostname = f"tests-{os.getpid()}@{socket.gethostname()}"
    assert (task.name, task.state, task.worker, task.faces) == ("albums.anonymize_photo", "succeeded", hostname, 1)
    assert task.queued_at and task.started_at and task.finished_at and task.duration
    assert task.queued_at <= task.started_at <= task.finished_at
    assert 0 < task.duration <= (task.finished_at - task.queued_at).total_seconds()
    assert photo.image_bytes == default_storage.size(photo.image.name)
    beat = WorkerHeartbeat.objects.get(hostname=hostname)
    assert beat.alive and beat.pid == worker.process.pid

    client.force_login(UserFactory(username="operator", is_staff=True))
    page = client.get(DASHBOARD).content.decode()
    assert re.search(rf"{re.escape(hostname)}.*?badge-done\">alive", section(page, "workers-panel"), re.S)
    assert 'data-faces="1"' in page


def test_failed_unlock_attempts_reach_the_dashboard(client: Client, db: None) -> None:
    from webapp.sharing.models import UnlockAttempt

    album = AlbumFactory(name="Grandma's 90th")
    UnlockAttempt.objects.create(
        album=album, slot_label="cousin", outcome=UnlockAttempt.Outcome.WRONG_PASSWORD, via="share_link"
    )
    success = UnlockAttempt.Outcome.SUCCESS
    UnlockAttempt.objects.create(album=album, slot_label="aunt", outcome=success, via="share_link")
    client.force_login(UserFactory(is_staff=True))
    page = client.get(reverse("dashboard:index")).content.decode()
    panel = page[page.index('id="unlocks-panel"') :]
    assert "cousin" in panel and "Wrong password" in panel and "aunt" not in panel
