"""What several test modules use: where the repository and its test data are, and decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # the test photos (credits in CREDITS.md) and format manifests


def decode(data: bytes) -> np.ndarray:
    """Image bytes → (H, W, 3) uint8 RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
