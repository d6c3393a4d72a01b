"""The REST API: token auth, albums, uploads through the web app's own path, status, files, schema."""

from __future__ import annotations

import base64
import io
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from drf_spectacular.validation import validate_schema
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cipher_worker import keys
from tests.helpers import DATA
from webapp import texts
from webapp.albums import tasks, transit
from webapp.albums.models import Album, Photo
from webapp.dashboard.models import TaskRecord

from .factories import PASSPHRASE, PASSWORD, AlbumFactory, PhotoFactory, UserFactory
from .helpers import FINISHED, WAIT, Worker

pytestmark = pytest.mark.django_db


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "JPEG")
    return out.getvalue()


def photo_file(data: bytes, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.fixture
def api(user: Any) -> APIClient:
    """A script's client: the user's token in the Authorization header, no session."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def upload(api: APIClient, album: Album, *files: bytes) -> Any:
    return api.post(
        f"/api/albums/{album.pk}/photos/", {"photos": [photo_file(f, f"p{i}.jpg") for i, f in enumerate(files)]}
    )


def content(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- authentication -----------------------------------------------------------------------


def test_the_api_needs_a_token_or_a_session(user: Any, owner_client: Client) -> None:
    anonymous = APIClient().get("/api/albums/")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Token"
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert forged.get("/api/albums/").status_code == 401

    browsable = owner_client.get("/api/albums/", HTTP_ACCEPT="text/html")  # the browsable API, by session
    assert browsable.status_code == 200 and "Album List" in browsable.content.decode()


def test_a_token_comes_from_the_token_page_the_command_or_a_password(owner_client: Client, user: Any) -> None:
    assert "You have no token yet" in owner_client.get("/api/token/").content.decode()

    made = owner_client.post("/api/token/", {"action": "create"}).content.decode()
    key = Token.objects.get(user=user).key
    assert key in made and "not shown again" in made
    again = owner_client.get("/api/token/").content.decode()
    assert key not in again and f"…{key[-4:]}" in again  # shown once, then only its end
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert script.get("/api/albums/").status_code == 200

    owner_client.post("/api/token/", {"action": "revoke"})
    assert script.get("/api/albums/").status_code == 401
    assert Client().get("/api/token/").status_code == 302  # the page needs a login

    call_command("drf_create_token", user.username, stdout=io.StringIO())
    by_command = Token.objects.get(user=user).key
    by_password = APIClient().post("/api/auth/token/", {"username": user.username, "password": PASSWORD})
    assert by_password.status_code == 200 and by_password.json()["token"] == Token.objects.get(user=user).key
    assert by_password.json()["token"] != by_command  # a new one: no token is ever shown twice


def test_a_token_stops_working_after_its_days_and_is_then_gone(owner_client: Client, user: Any, settings: Any) -> None:
    settings.VEIL_TOKEN_DAYS = 30
    token = Token.objects.create(user=user)
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert script.get("/api/albums/").status_code == 200
    assert "It works until" in owner_client.get("/api/token/").content.decode()

    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(days=30, seconds=1))

    expired = script.get("/api/albums/")
    assert expired.status_code == 401 and expired.json()["detail"].startswith("This API token has expired")
    assert not Token.objects.filter(user=user).exists()


# --- albums -------------------------------------------------------------------------------


def test_an_album_made_through_the_api_has_its_key_pair_and_owner_slot(api: APIClient, user: Any) -> None:
    response = api.post("/api/albums/", {"name": "Lake house", "passphrase": PASSPHRASE}, format="json")

    assert response.status_code == 201, response.content
    album = Album.objects.get()
    body = response.json()
    assert body["id"] == str(album.pk) and body["name"] == "Lake house" and "passphrase" not in body
    assert (body["fingerprint"], body["photo_count"], body["done_count"]) == (album.fingerprint, 0, 0)
    assert album.owner == user
    assert keys.public_key_from_private(album.key_slots.get().unwrap(PASSPHRASE)) == album.public_key_bytes
    assert body["photos_url"].endswith(f"/api/albums/{album.pk}/photos/")


def test_an_album_needs_a_name_and_a_long_enough_passphrase(api: APIClient) -> None:
    response = api.post("/api/albums/", {"name": "", "passphrase": "short"}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"name", "passphrase"}
    assert "at least 8 characters" in response.json()["passphrase"][0]
    assert not Album.objects.exists()


def test_list_and_retrieve_show_my_albums_with_their_photo_counts(api: APIClient, user: Any) -> None:
    mine = AlbumFactory(owner=user, name="Mine")
    PhotoFactory(album=mine, status=Photo.Status.DONE)
    PhotoFactory(album=mine)
    AlbumFactory(name="Someone else's")

    listed = api.get("/api/albums/").json()
    assert listed["count"] == 1
    [album] = listed["results"]
    assert (album["name"], album["photo_count"], album["done_count"]) == ("Mine", 2, 1)
    assert api.get(album["url"]).json() == album


def test_another_users_albums_and_photos_are_not_found(api: APIClient, user: Any) -> None:
    theirs = AlbumFactory(owner=UserFactory())
    photo = PhotoFactory(album=theirs, status=Photo.Status.FAILED, retryable=True)

    assert api.get(f"/api/albums/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/albums/{theirs.pk}/photos/").status_code == 404
    assert upload(api, theirs, jpeg()).status_code == 404
    for path in ("", "image/", "thumbnail/", "download/"):
        assert api.get(f"/api/photos/{photo.pk}/{path}").status_code == 404
    assert api.post(f"/api/photos/{photo.pk}/retry/").status_code == 404
    assert api.get("/api/albums/not-a-uuid/").status_code == 404
    assert theirs.photos.count() == 1


# --- uploads ------------------------------------------------------------------------------


def test_an_api_upload_is_sealed_in_transit_and_queued_like_a_web_upload(
    api: APIClient, user: Any, fresh_redis: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    album = AlbumFactory(owner=user)
    first, second = jpeg(), jpeg(32, 32)

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(api, album, first, second)

    assert response.status_code == 201, response.content
    sent = response.json()
    assert [p["status"] for p in sent] == ["queued", "queued"] and sent[0]["image_url"] is None
    photos = {str(p.pk): p for p in album.photos.all()}
    assert set(photos) == {p["id"] for p in sent}
    # the bytes wait sealed to the workers' key, and each task message carries only its photo id
    assert {transit.get_upload(pk) for pk in photos} == {first, second}
    messages = [json.loads(m) for m in fresh_redis.lrange("celery", 0, -1)]
    assert {m["headers"]["task"] for m in messages} == {"albums.anonymize_photo"}
    assert sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages) == sorted(photos)
    assert all(first[200:264] not in bytes(fresh_redis.get(transit.transit_key(pk)) or b"") for pk in photos)
    assert TaskRecord.objects.filter(state="queued", photo__album=album).count() == 2


def test_a_bad_upload_is_refused_with_the_web_pages_reasons(api: APIClient, user: Any, settings: Any) -> None:
    album = AlbumFactory(owner=user)

    empty = api.post(f"/api/albums/{album.pk}/photos/", {})
    assert empty.status_code == 400 and empty.json() == {"detail": "Choose at least one photo to upload."}

    settings.VEIL_MAX_UPLOAD_MB, settings.VEIL_MAX_UPLOAD_BYTES = 1, 1000
    large = upload(api, album, b"\xff" * 1001)
    assert large.status_code == 413
    assert large.json() == {"detail": "This photo is too large: Veil accepts photos up to 1 MB."}
    assert not album.photos.exists()

    settings.VEIL_MAX_UPLOAD_MB, settings.VEIL_MAX_UPLOAD_BYTES = 40, 40 * 2**20
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    files = [SimpleUploadedFile("a.jpg", jpeg()), SimpleUploadedFile("b.jpg", gif.getvalue())]
    sneaky = api.post(f"/api/albums/{album.pk}/photos/", {"photos": files}, format="multipart")
    assert sneaky.status_code == 400
    assert sneaky.json() == {
        "detail": "“b.jpg”: the file is not an image Veil can read: it takes JPEG, PNG and WebP photos."
    }
    assert not album.photos.exists(), "one bad file and none of the batch is queued"

    settings.VEIL_MAX_FILES_PER_REQUEST = 2
    many = [SimpleUploadedFile(f"{i}.jpg", jpeg()) for i in range(3)]
    crowd = api.post(f"/api/albums/{album.pk}/photos/", {"photos": many}, format="multipart")
    assert crowd.status_code == 400
    assert crowd.json() == {"detail": "Upload at most 2 photos at a time; send the rest in another batch."}
    assert not album.photos.exists()


# --- photo status and files ---------------------------------------------------------------


def test_photo_status_and_its_files_need_the_token(api: APIClient, user: Any) -> None:
    album = AlbumFactory(owner=user)
    image = jpeg(800, 600)
    done = PhotoFactory(
        album=album,
        status=Photo.Status.DONE,
        progress=0.9,
        format="JPEG",
        faces=2,
        width=800,
        height=600,
        image=default_storage.save("photos/a/x.jpg", ContentFile(image)),
        thumbnail=default_storage.save("photos/a/x.thumb.jpg", ContentFile(tasks.make_thumbnail(image))),
    )
    PhotoFactory(album=album, status=Photo.Status.FAILED, failure_reason="the file is empty")

    status = api.get(f"/api/photos/{done.pk}/").json()
    assert {k: status[k] for k in ("status", "progress", "faces", "width", "height", "failure_reason")} == {
        "status": "done",
        "progress": 1.0,
        "faces": 2,
        "width": 800,
        "height": 600,
        "failure_reason": "",
    }
    assert status["message"] == "2 faces anonymized"
    assert status["image_url"] == f"http://testserver/api/photos/{done.pk}/image/?v={done.image_version}"

    full = api.get(status["image_url"], HTTP_ACCEPT="image/avif,image/webp,*/*")
    assert full.status_code == 200 and full["Content-Type"] == "image/jpeg" and content(full) == image
    assert "private" in full["Cache-Control"]
    assert APIClient().get(status["image_url"]).status_code == 401
    thumb = api.get(status["thumbnail_url"], HTTP_ACCEPT="image/jpeg")
    assert Image.open(io.BytesIO(content(thumb))).size == (400, 300)
    download = api.get(status["download_url"])
    assert download["Content-Disposition"].startswith("attachment") and content(download) == image

    failed = api.get(f"/api/albums/{album.pk}/photos/", {"status": "failed"}).json()
    assert failed["count"] == 1 and failed["results"][0]["failure_reason"] == "the file is empty"
    assert failed["results"][0]["image_url"] is None
    assert api.get(f"/api/albums/{album.pk}/photos/").json()["count"] == 2


def test_a_failed_photo_can_be_retried_while_its_upload_is_in_transit(api: APIClient, user: Any) -> None:
    photo = PhotoFactory(
        album=AlbumFactory(owner=user), status=Photo.Status.FAILED, retryable=True, failure_reason=texts.OUR_FAULT
    )
    transit.put_upload(photo.pk, jpeg())

    retried = api.post(f"/api/photos/{photo.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"

    transit.discard_upload(photo.pk)
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.FAILED)
    assert api.post(f"/api/photos/{photo.pk}/retry/").status_code == 409


# --- schema -------------------------------------------------------------------------------


def test_the_schema_is_valid_openapi_with_every_endpoint() -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)  # raises on anything that is not OpenAPI 3
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/albums/",
        "/api/albums/{id}/",
        "/api/albums/{id}/photos/",
        "/api/photos/{id}/",
        "/api/photos/{id}/image/",
        "/api/photos/{id}/download/",
    } <= set(schema["paths"])
    upload_body = schema["paths"]["/api/albums/{id}/photos/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_docs_page_uses_no_cdn() -> None:
    page = Client().get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "/static/drf_spectacular_sidecar/" in page
    assert "cdn." not in page and "unpkg" not in page


# --- a real worker (a transactional test: pytest-django runs it after the others) ----------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_upload_through_the_api_then_poll_until_done(worker: Worker, user: Any, settings: Any) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    token = Token.objects.create(user=user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    album = api.post("/api/albums/", {"name": "Beach", "passphrase": PASSPHRASE}, format="json").json()
    original = (DATA / "person_a_2.jpg").read_bytes()

    [queued] = api.post(album["photos_url"], {"photos": photo_file(original)}).json()

    deadline = time.monotonic() + WAIT
    status = queued
    while status["status"] not in FINISHED:
        assert time.monotonic() < deadline and worker.process.poll() is None, worker.output()
        time.sleep(0.3)
        status = api.get(queued["url"]).json()
    assert (status["status"], status["faces"], status["progress"]) == ("done", 1, 1.0), worker.output()
    image = api.get(status["image_url"])
    assert image.status_code == 200 and content(image)[:2] == b"\xff\xd8" and content(image) != original
    assert api.get(album["url"]).json()["done_count"] == 1


def test_recipients_through_the_api(api: APIClient, user: Any) -> None:
    album = AlbumFactory(owner=user)
    url = f"/api/albums/{album.pk}/recipients/"

    wrong = api.post(url, {"name": "Cousin", "owner_passphrase": "not the passphrase"}, format="json")
    assert wrong.status_code == 400 and "owner_passphrase" in wrong.json()

    made = api.post(url, {"name": "Cousin", "owner_passphrase": PASSPHRASE}, format="json")
    assert made.status_code == 201 and "no-store" in made["Cache-Control"]
    generated = made.json()["password"]  # Veil made one: shown this once
    chosen = api.post(
        url, {"name": "Aunt", "password": "aunt's own secret", "owner_passphrase": PASSPHRASE}, format="json"
    )
    assert chosen.status_code == 201 and "password" not in chosen.json()
    duplicate = api.post(url, {"name": "aunt", "owner_passphrase": PASSPHRASE}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()

    listed = api.get(url).json()
    assert [r["name"] for r in listed] == ["Aunt", "Cousin"] and all("password" not in r for r in listed)
    private = album.key_slots.get(kind="owner").unwrap(PASSPHRASE)
    cousin = album.key_slots.get(pk=made.json()["id"])
    assert cousin.unwrap(generated) == private

    assert api.delete(f"{url}{cousin.pk}/").status_code == 204
    assert [r["name"] for r in api.get(url).json()] == ["Aunt"]
    owner = album.key_slots.get(kind="owner")
    assert api.delete(f"{url}{owner.pk}/").status_code == 404  # the owner's slot is not a recipient
    other = AlbumFactory()
    assert api.get(f"/api/albums/{other.pk}/recipients/").status_code == 404
