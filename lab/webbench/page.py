"""Part 1: the album page of an album with many finished photos, timed in this process.

The photos are rows only (``bulk_create``): the page links each thumbnail and image by URL and
opens no file. Every row carries the values of one real anonymized photo, its recovery envelope
included, because that is what the page's query reads from the database.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from cipher_worker.imageio import FORMATS
from cipher_worker.pipeline import AnonymizedPhoto
from webapp.albums.models import Album, Photo

from .stats import log, summary
from .world import HOST

SMALL_ALBUM = 5  # photos in the album whose query count the big one's is compared with
WARMUP = 5
FETCH_RUNS = 5
PASSPHRASE = "bench only: a summer at the lake"


def make_album(owner: User, name: str) -> Album:
    return Album.objects.create_with_passphrase(owner=owner, name=name, passphrase=PASSPHRASE)


def seed_album(owner: User, name: str, count: int, sample: AnonymizedPhoto, *, envelopes: bool = True) -> Album:
    """An album of ``count`` finished photos, each with ``sample``'s size, format, faces and (if
    ``envelopes``) its envelope."""
    album = make_album(owner, name)
    ext = FORMATS[sample.format]
    photos = []
    for _ in range(count):
        base = f"photos/{album.pk}/{uuid.uuid4().hex}"
        photos.append(
            Photo(
                album=album,
                status=Photo.Status.DONE,
                progress=1.0,
                image=base + ext,
                thumbnail=base + ".thumb.jpg",
                envelope=sample.envelope if envelopes else None,
                format=sample.format,
                width=sample.size[0],
                height=sample.size[1],
                faces=len(sample.faces),
            )
        )
    Photo.objects.bulk_create(photos, batch_size=50)
    return album


def page_times(client: Client, url: str, requests: int) -> dict[str, float]:
    for _ in range(WARMUP):
        _get(client, url)
    return summary([_get(client, url)[0] for _ in range(requests)])


def _get(client: Client, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return elapsed, len(response.content)


def query_count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        _get(client, url)
    return len(queries.captured_queries)


def _fetch_time(album: Album, defer_envelope: bool) -> float:
    """Median seconds to load the album's photo rows, as the page's query does or without the envelope."""
    times = []
    for _ in range(FETCH_RUNS):
        photos = album.photos.all()
        if defer_envelope:
            photos = photos.defer("envelope")
        start = time.perf_counter()
        list(photos)
        times.append(time.perf_counter() - start)
    return summary(times)["p50"]


def measure_album_page(owner: User, sample: AnonymizedPhoto, *, photos: int, requests: int) -> dict[str, Any]:
    """Server time of the album page (Django test Client, logged in) and its SQL queries per request."""
    log(f"seeding an album of {photos} photos (envelope {len(sample.envelope) / 1024:.0f} KiB each)")
    album = seed_album(owner, "Bench: many photos", photos, sample)
    small = seed_album(owner, "Bench: a few photos", SMALL_ALBUM, sample)
    client = Client(HTTP_HOST=HOST)  # ALLOWED_HOSTS is 127.0.0.1 only, as in the live stack
    client.force_login(owner)
    url = album.get_absolute_url()
    log(f"timing {requests} requests of the album page")
    server = page_times(client, url, requests)
    queries, small_queries = query_count(client, url), query_count(client, small.get_absolute_url())
    log(f"album page: p50 {server['p50'] * 1000:.0f} ms, p95 {server['p95'] * 1000:.0f} ms, {queries} queries")
    # The same page when the rows hold no envelope: what the envelopes cost a query that reads every column.
    bare = seed_album(owner, "Bench: no envelopes", photos, sample, envelopes=False)
    log(f"timing {max(10, requests // 3)} requests of the same page without envelopes in the rows")
    bare_server = page_times(client, bare.get_absolute_url(), max(10, requests // 3))
    result: dict[str, Any] = {
        "photos": photos,
        "requests": requests,
        "server_s": server,
        "server_without_envelopes_s": bare_server,
        "html_bytes": _get(client, url)[1],
        "queries": queries,
        "queries_small_album": small_queries,
        "small_album_photos": SMALL_ALBUM,
        "queries_constant": queries == small_queries,
        "envelope_bytes": len(sample.envelope),
        "rows_all_columns_s": _fetch_time(album, defer_envelope=False),
        "rows_without_envelope_s": _fetch_time(album, defer_envelope=True),
        "album_id": str(album.pk),
    }
    return result
