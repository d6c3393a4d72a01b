from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"


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
