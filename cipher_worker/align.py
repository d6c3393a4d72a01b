"""Five-point alignment: a similarity transform from a face's landmarks to a codec's crop.

The transform maps image coordinates to crop coordinates; its inverse puts the crop back.
Large faces are first shrunk with area averaging so the crop is not aliased.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Alignment:
    """``matrix``: (2, 3) float64, image → crop; ``size``: crop side in pixels."""

    matrix: np.ndarray
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) taking (N, 2) src onto dst: (2, 3)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / (s**2).sum() * len(src))
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def align(landmarks: np.ndarray, template: np.ndarray, size: int) -> Alignment:
    """(5, 2) image landmarks, (5, 2) template in crop pixels → :class:`Alignment`."""
    return Alignment(similarity(landmarks.astype(np.float64), template.astype(np.float64)), size)


def crop(image: np.ndarray, alignment: Alignment) -> np.ndarray:
    """(H, W, C) image → (size, size, C) aligned crop, same dtype."""
    matrix = alignment.matrix.copy()
    shrink = alignment.scale
    if shrink < 0.5:
        # area-average the neighbourhood down to twice the crop resolution first
        factor = 2 * shrink
        corners = cv2.transform(
            np.array([[[0, 0], [alignment.size, 0], [0, alignment.size], [alignment.size] * 2]], np.float64),
            alignment.inverse,
        )[0]
        margin = alignment.size / shrink * 0.1
        x0, y0 = np.maximum(np.floor(corners.min(0) - margin), 0).astype(int)
        x1 = int(min(np.ceil(corners[:, 0].max() + margin), image.shape[1]))
        y1 = int(min(np.ceil(corners[:, 1].max() + margin), image.shape[0]))
        if x1 > x0 and y1 > y0:
            region = image[y0:y1, x0:x1]
            small = cv2.resize(
                region,
                (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))),
                interpolation=cv2.INTER_AREA,
            )
            fx, fy = small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)
            # crop = M · image = M · (S⁻¹ · small + offset)
            to_image = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0]])
            matrix = _compose(matrix, to_image)
            image = small
    return cv2.warpAffine(
        image, matrix, (alignment.size, alignment.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )


def paste_region(crop_image: np.ndarray, alignment: Alignment, box: tuple[int, int, int, int]) -> np.ndarray:
    """Warp a (size, size, C) crop back into the image region ``box`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    to_crop = _compose(alignment.matrix, np.array([[1.0, 0, x0], [0, 1.0, y0]]))
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(crop_image, to_crop, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(2, 3) affines: x ↦ a(b(x))."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]
