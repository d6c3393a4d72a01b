"""Parts 2 and 3: the real stack (uvicorn + a Celery worker) driven over HTTP and the websocket.

A browser's path, without the browser: the session cookie of a logged-in user, the album page
for the CSRF token, one multipart POST per photo with ``X-CSRFToken`` and ``Accept:
application/json`` (as static/album.js sends it), and the page's websocket at /ws/updates/
with the session cookie and a same-origin ``Origin``. Every status message is stamped with
``time.perf_counter()`` as it arrives, so the times below are what a page would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from cipher_worker import api as cipher_api
from webapp.albums import transit
from webapp.albums.models import Album
from webapp.albums.tasks import make_thumbnail
from webapp.realtime.status import photo_status_message, send_status

from .page import make_album
from .stats import log, summary
from .world import HOST, BenchError, Stack, free_port, probe_key

SETTLE = 0.2  # seconds between one photo's "done" (and its cross-check) and the next upload
WAIT = 300.0  # seconds for a photo to finish: the first one waits for the worker to load the model
FINISHED = ("done", "failed")
_FORM_TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


class LiveClient:
    """HTTP to the live server as a logged-in browser would speak it (stdlib http.client)."""

    def __init__(self, port: int, session_key: str) -> None:
        self.port = port
        self.origin = f"http://{HOST}:{port}"
        self.cookies = {settings.SESSION_COOKIE_NAME: session_key}
        self.form_token = ""

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers={"Cookie": self.cookie_header, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def get_page(self, path: str) -> bytes:
        """GET ``path`` (200 expected), keeping any cookie it sets and the page's CSRF form token."""
        status, headers, body = self.request("GET", path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body[:300]!r}")
        for line in headers.get_all("Set-Cookie") or []:
            # The cookies are Secure with DEBUG off; over plain HTTP the bench hands them back itself.
            self.cookies.update({name: morsel.value for name, morsel in SimpleCookie(line).items()})
        if match := _FORM_TOKEN.search(body):
            self.form_token = match.group(1).decode("ascii")
        return body

    def upload(self, path: str, filename: str, data: bytes) -> tuple[str, float, float]:
        """POST one photo as the album page's script does; (photo id, start, 201 received) in perf_counter s."""
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="photos"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
            "X-CSRFToken": self.form_token,
            "Origin": self.origin,
        }
        start = time.perf_counter()
        status, _, answer = self.request("POST", path, body, headers)
        answered = time.perf_counter()
        if status != 201:
            raise BenchError(f"the upload answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["photos"][0]["photo_id"]), start, answered


class StatusLog:
    """The arrival time of each photo's first message of each status, read off the websocket."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = {}  # perf_counter seconds
        self.done_epoch: dict[str, float] = {}  # time.time() of "done", to compare with other processes
        self.messages: Counter[str] = Counter()
        self.last_message: dict[str, str] = {}
        self.listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def listen(self, ws: ClientConnection) -> None:
        async for raw in ws:
            at, epoch = time.perf_counter(), time.time()
            data = json.loads(raw).get("data") or {}
            photo_id, status = str(data.get("photo_id")), str(data.get("status"))
            self.seen.setdefault(photo_id, {}).setdefault(status, at)
            if status == "done":
                self.done_epoch.setdefault(photo_id, epoch)
            self.messages[photo_id] += 1
            self.last_message[photo_id] = str(data.get("message", ""))
            self._changed.set()

    def finished(self, photo_id: str) -> str | None:
        statuses = self.seen.get(photo_id, {})
        return next((s for s in FINISHED if s in statuses), None)

    def finished_at(self, photo_id: str) -> float:
        status = self.finished(photo_id)
        if status is None:
            raise BenchError(f"photo {photo_id} has not finished")
        return self.seen[photo_id][status]

    async def wait(self, photo_ids: Sequence[str], stack: Stack, timeout: float = WAIT) -> None:
        """Until every photo is done or failed; raises if a process dies, the socket closes or time runs out."""
        deadline = time.monotonic() + timeout
        while any(self.finished(p) is None for p in photo_ids):
            stack.check()
            if self.listener is not None and self.listener.done():
                raise BenchError("the websocket closed while photos were still in progress")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"photos still unfinished after {timeout:.0f} s\n{stack.tail('worker')}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    def require_done(self, photo_id: str) -> None:
        if self.finished(photo_id) != "done":
            raise BenchError(f"photo {photo_id} failed: {self.last_message.get(photo_id)}")


@contextlib.asynccontextmanager
async def status_socket(client: LiveClient) -> AsyncIterator[StatusLog]:
    """The album page's websocket, its messages recorded in a StatusLog while the block runs."""
    url = f"ws://{HOST}:{client.port}/ws/updates/"
    headers = {"Cookie": client.cookie_header}
    async with connect(url, origin=Origin(client.origin), additional_headers=headers, proxy=None) as ws:
        status = StatusLog()
        status.listener = asyncio.create_task(status.listen(ws))
        try:
            yield status
        finally:
            status.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status.listener


def worker_record(photo_id: str, stack: Stack, timeout: float = 10.0) -> dict[str, float]:
    """What the probe in the worker measured for ``photo_id`` (written once its task has returned)."""
    deadline = time.monotonic() + timeout
    while (raw := transit.client().get(probe_key(photo_id))) is None:
        stack.check()
        if time.monotonic() > deadline:
            raise BenchError(f"the worker's probe left no record for photo {photo_id}\n{stack.tail('worker')}")
        time.sleep(0.01)
    return {key: float(value) for key, value in json.loads(raw).items()}


def cipher_time(data: bytes, public_key: bytes) -> float:
    """Seconds ``cipher_worker`` takes for ``data`` in this (warm) process, as the task calls it."""
    start = time.perf_counter()
    cipher_api.anonymize_photo(data, public_key)
    return time.perf_counter() - start


async def upload_latency(
    client: LiveClient, stack: Stack, album: Album, name: str, data: bytes, *, uploads: int, warmup: int
) -> list[dict[str, float]]:
    """One photo at a time: upload start → "done" on the websocket, and the cipher's own time for it
    (in the worker, from the probe; and in this process on the same bytes, as a cross-check)."""
    path = reverse("albums:upload", args=[album.pk])
    samples: list[dict[str, float]] = []
    async with status_socket(client) as status:
        for i in range(warmup + uploads):
            await asyncio.sleep(SETTLE)
            photo_id, start, answered = await asyncio.to_thread(client.upload, path, name, data)
            await status.wait([photo_id], stack)
            status.require_done(photo_id)
            worker = await asyncio.to_thread(worker_record, photo_id, stack)
            # Right after, on the same bytes, while the worker is idle.
            cipher_here = await asyncio.to_thread(cipher_time, data, album.public_key_bytes)
            if i < warmup:
                continue
            seen = status.seen[photo_id]
            wall, cipher_s = seen["done"] - start, worker["cipher_s"]
            started = seen.get("detecting", seen["done"])
            samples.append(
                {
                    "wall_s": wall,
                    "cipher_s": cipher_s,
                    "cipher_here_s": cipher_here,
                    "overhead_s": wall - cipher_s,
                    "overhead_here_s": wall - cipher_here,
                    "request_s": answered - start,
                    "to_worker_s": started - start,
                    "in_worker_s": seen["done"] - started,
                    "worker_extra_s": seen["done"] - started - cipher_s,
                    "after_cipher_s": status.done_epoch[photo_id] - worker["cipher_end_epoch"],
                    "progress_callbacks_s": worker["progress_callbacks_s"],
                    "messages": float(status.messages[photo_id]),
                    "torch_threads": worker["torch_threads"],
                }
            )
            log(
                f"upload {i - warmup + 1}/{uploads}: done after {wall * 1000:.0f} ms; cipher {cipher_s * 1000:.0f} ms "
                f"in the worker, {cipher_here * 1000:.0f} ms here"
            )
    return samples


async def throughput(
    client: LiveClient, stack: Stack, album: Album, files: Sequence[tuple[str, bytes]], *, count: int, warmup: int
) -> dict[str, float]:
    """``count`` photos uploaded back to back; photos per minute from the first upload to the last "done"."""
    path = reverse("albums:upload", args=[album.pk])
    async with status_socket(client) as status:
        warm = [(await asyncio.to_thread(client.upload, path, *files[i % len(files)]))[0] for i in range(warmup)]
        await status.wait(warm, stack)
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(count):
            ids.append((await asyncio.to_thread(client.upload, path, *files[i % len(files)]))[0])
        uploaded = time.perf_counter() - start
        await status.wait(ids, stack, timeout=WAIT + 30 * count)
        elapsed = max(status.finished_at(p) for p in ids) - start
    done = [p for p in ids if status.finished(p) == "done"]
    records = [await asyncio.to_thread(worker_record, p, stack) for p in done]
    return {
        "photos": count,
        "elapsed_s": elapsed,
        "uploads_s": uploaded,
        "per_minute": count / elapsed * 60,
        "failed": count - len(done),
        "cipher_mean_s": sum(r["cipher_s"] for r in records) / max(1, len(records)),
        "torch_threads": max((r["torch_threads"] for r in records), default=0),
    }


def page_over_http(client: LiveClient, path: str, *, requests: int, warmup: int = 3) -> dict[str, float]:
    """Wall time of GET ``path`` through uvicorn (ASGI, a new connection each time)."""
    times = []
    for i in range(warmup + requests):
        start = time.perf_counter()
        client.get_page(path)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return summary(times)


def _median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)["p50"]


def diagnose(owner: User, album: Album, original: bytes) -> dict[str, float]:
    """The web app's own steps around the cipher, timed one by one in this process."""
    anonymized = cipher_api.anonymize_photo(original, album.public_key_bytes)
    scratch = uuid.uuid4()
    message = photo_status_message(photo_id=scratch, album_id=album.pk, status="done", progress=1.0)

    def transit_round_trip() -> None:
        transit.put_upload(scratch, original)
        transit.get_upload(scratch)
        transit.discard_upload(scratch)

    return {
        "redis_ping_s": _median_time(transit.client().ping, 20),
        "status_push_s": _median_time(lambda: send_status(owner.pk, message), 20),
        "transit_round_trip_s": _median_time(transit_round_trip, 10),
        "thumbnail_s": _median_time(lambda: make_thumbnail(anonymized.image), 5),
    }


def session_key(owner: User) -> str:
    client = Client(HTTP_HOST=HOST)
    client.force_login(owner)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def measure_live(
    owner: User,
    stack: Stack,
    *,
    photo: Path,
    mix: Sequence[Path],
    uploads: int,
    throughput_photos: int,
    parts: set[str],
    page_album_id: str | None,
    page_requests: int,
) -> dict[str, Any]:
    album = make_album(owner, "Bench: live uploads")
    original = photo.read_bytes()
    files = [(p.name, p.read_bytes()) for p in mix]
    result: dict[str, Any] = {"photo": photo.name, "photo_bytes": len(original)}
    result["diagnosis"] = diagnose(owner, album, original)

    port = free_port()
    log(f"starting uvicorn on {HOST}:{port} and a Celery worker (1 process)")
    stack.start_web(port)
    stack.start_worker(1)
    client = LiveClient(port, session_key(owner))
    client.get_page(album.get_absolute_url())  # the CSRF cookie and form token, as a browser gets them

    if page_album_id is not None:
        log("timing the big album page over HTTP")
        result["page_http_s"] = page_over_http(
            client, reverse("albums:detail", args=[page_album_id]), requests=page_requests
        )
    if "latency" in parts:
        log(f"upload → done: {uploads} uploads of {photo.name} after 2 warm-ups")
        samples = asyncio.run(upload_latency(client, stack, album, photo.name, original, uploads=uploads, warmup=2))
        result["latency"] = {key: summary([s[key] for s in samples]) for key in samples[0]}
        result["uploads"] = uploads
    if "throughput" in parts:
        result["throughput"] = {}
        for processes in (1, 2):
            if processes != 1:
                stack.stop("worker")
                log(f"restarting the worker with {processes} processes")
                stack.start_worker(processes)
            log(f"throughput: {throughput_photos} photos, {processes} worker process(es)")
            run = asyncio.run(throughput(client, stack, album, files, count=throughput_photos, warmup=2 * processes))
            run["cipher_bound_per_minute"] = processes * 60 / run["cipher_mean_s"]
            log(f"{run['per_minute']:.0f} photos/min ({run['failed']:.0f} failed)")
            result["throughput"][processes] = run
        result["mix"] = [name for name, _ in files]
    return result
