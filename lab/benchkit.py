"""What both cipher benchmarks share: the 12 MP photo with 6 faces, the run count, the log
line, time formatting and peak memory.

The photo is built from the bundled test photos: six face crops (faces 200–400 px wide)
on a textured 4000×3000 canvas, saved as JPEG quality 90 in memory.
"""

from __future__ import annotations

import resource
import sys

import cv2
import numpy as np

from cipher_worker.detect import FaceDetector
from cipher_worker.imageio import decode_image, encode_image, read_file
from lab.evaluate import DEFAULT_IMAGES
from lab.facemetrics import largest_face

CANVAS = (4000, 3000)  # (width, height): 12 MP
FACE_WIDTHS = (200, 240, 280, 320, 360, 400)  # px, one per face
JPEG_QUALITY = 90
RUNS = 3


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _face_tiles(count: int) -> list[np.ndarray]:
    """``count`` RGB crops around the largest face of the test photos, faces scaled to :data:`FACE_WIDTHS`."""
    from skimage import data as skdata

    sources = [np.ascontiguousarray(skdata.astronaut()[..., :3])]
    sources += [decode_image(read_file(p)).pixels for p in sorted(DEFAULT_IMAGES.glob("*.jpg"))]
    detector = FaceDetector()
    found = [(px, f) for px in sources if (f := largest_face(detector.detect(px))) is not None]
    found.sort(key=lambda item: -item[1].box[2])  # sharpest sources first: small ones would be upscaled a lot
    tiles = []
    for i in range(count):
        pixels, face = found[i % len(found)]
        x, y, w, h = face.box
        cx, cy, half = x + w / 2, y + h / 2, 1.1 * max(w, h)  # the face, hair and some shoulders
        x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
        x1, y1 = min(pixels.shape[1], round(cx + half)), min(pixels.shape[0], round(cy + half))
        scale = FACE_WIDTHS[i % len(FACE_WIDTHS)] / w
        size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        tiles.append(cv2.resize(pixels[y0:y1, x0:x1], size, interpolation=interp))
    return tiles


def _canvas(rng: np.random.Generator) -> np.ndarray:
    """A (3000, 4000, 3) uint8 neutral background with gentle shading and sensor-like noise,
    so the JPEG costs about what a real photo costs to decode and encode."""
    width, height = CANVAS
    shade = cv2.resize(
        rng.uniform(105, 155, (3, 4, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    noise = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return (shade + noise).clip(0, 255).astype(np.uint8)


def build_photo(faces: int = 6, seed: int = 0) -> bytes:
    """The benchmark photo: ``faces`` face tiles on a 3 × 2 grid of a 12 MP canvas, as JPEG bytes."""
    rng = np.random.default_rng(seed)
    canvas = _canvas(rng)
    width, height = CANVAS
    cols, rows = 3, max(1, -(-faces // 3))
    for i, tile in enumerate(_face_tiles(faces)):
        cx, cy = (i % cols + 0.5) * width / cols, (i // cols + 0.5) * height / rows
        th, tw = tile.shape[:2]
        x0, y0 = round(cx - tw / 2), round(cy - th / 2)
        canvas[y0 : y0 + th, x0 : x0 + tw] = tile
    return encode_image(canvas, "JPEG", quality=JPEG_QUALITY)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
