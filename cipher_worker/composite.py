"""Putting a rendered face back into the photo.

The rendered crop is colour-matched to the original skin (Lab mean and spread inside the
face ellipse), warped back at full resolution, given the photo's grain, and blended with
a feathered ellipse over the face interior. Pixels where the mask is zero are left
exactly as they were — this is what makes exact recovery and "background untouched" hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import Alignment, paste_region


@dataclass(frozen=True)
class FaceMask:
    """A feathered ellipse in crop pixels: centre (cx, cy), radii (rx, ry); the weight is 1
    inside (1 − feather)·radius and falls smoothly to 0 at the radius."""

    cx: float
    cy: float
    rx: float
    ry: float
    feather: float = 0.25

    def as_tuple(self) -> tuple[float, ...]:
        return (self.cx, self.cy, self.rx, self.ry, self.feather)

    @classmethod
    def from_tuple(cls, values: tuple[float, ...]) -> FaceMask:
        return cls(*values)

    @classmethod
    def for_template(cls, template: np.ndarray) -> FaceMask:
        """Hairline to chin and cheek to cheek of a (5, 2) landmark template, kept inside the
        crop. A smaller mask (brows to lips) left enough of the face for SFace to re-identify
        a third of the faces on the test photos; this one leaves none."""
        eyes, mouth = template[:2].mean(0), template[3:].mean(0)
        eye_gap = float(np.linalg.norm(template[1] - template[0]))
        span = float(mouth[1] - eyes[1])
        top, bottom = eyes[1] - 1.35 * span, mouth[1] + 0.61 * span
        return cls(float((eyes[0] + mouth[0]) / 2), float(top + bottom) / 2, 1.2 * eye_gap, float(bottom - top) / 2)

    def weights(self, crop_xy: np.ndarray) -> np.ndarray:
        """(..., 2) crop coordinates → (...) weights in [0, 1]."""
        d = np.sqrt(((crop_xy[..., 0] - self.cx) / self.rx) ** 2 + ((crop_xy[..., 1] - self.cy) / self.ry) ** 2)
        t = np.clip((1 - d) / self.feather, 0, 1)
        return t * t * (3 - 2 * t)  # smoothstep: no visible seam

    def skin(self) -> FaceMask:
        """The inner face (cheeks, nose, mouth) without the hairline the outer mask reaches:
        where colours are measured, so a rendered fringe does not skew the skin tone."""
        return FaceMask(self.cx, self.cy + 0.1 * self.ry, 0.55 * self.rx, 0.5 * self.ry, self.feather)

    def crop_weights(self, size: int) -> np.ndarray:
        yy, xx = np.mgrid[:size, :size].astype(np.float64)
        return self.weights(np.stack([xx, yy], -1))


def face_box(mask: FaceMask, alignment: Alignment, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The image region (x0, y0, x1, y1) the mask can touch, clipped to the image."""
    angle = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ring = np.stack([mask.cx + mask.rx * np.cos(angle), mask.cy + mask.ry * np.sin(angle)], -1)
    pts = cv2.transform(ring[None], alignment.inverse)[0]
    width, height = image_size
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def box_weights(mask: FaceMask, alignment: Alignment, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) mask weights over the image box, computed analytically at full resolution."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    m = alignment.matrix
    crop_xy = np.stack([m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]], -1)
    return mask.weights(crop_xy)


def match_colours(rendered: np.ndarray, original: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shift the rendered crop's Lab statistics inside ``weights`` to the original's.

    rendered, original: (S, S, 3) uint8 RGB; weights: (S, S) → (S, S, 3) uint8."""
    w = weights[..., None] / max(weights.sum(), 1e-6)
    src = cv2.cvtColor(rendered, cv2.COLOR_RGB2LAB).astype(np.float64)
    ref = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float64)
    mu_s, mu_r = (src * w).sum((0, 1)), (ref * w).sum((0, 1))
    sd_s = np.sqrt((((src - mu_s) ** 2) * w).sum((0, 1))) + 1e-3
    sd_r = np.sqrt((((ref - mu_r) ** 2) * w).sum((0, 1)))
    # a flat render must not blow up noise; chroma gains stay close to 1 or eyes turn colourful
    gain = np.clip(sd_r / sd_s, [0.6, 0.8, 0.8], [1.6, 1.25, 1.25])
    out = (src - mu_s) * gain + mu_r
    return cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def grain_sigma(region: np.ndarray, weights: np.ndarray) -> float:
    """Robust noise level of an (h, w, 3) uint8 region inside the mask (MAD of a Laplacian)."""
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    values = lap[weights > 0.5]
    if values.size < 16:
        return 0.0
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.4826 * mad / np.sqrt(20.0)  # a 4-neighbour Laplacian amplifies white noise by √20


def composite_face(
    image: np.ndarray,
    rendered_crop: np.ndarray,
    alignment: Alignment,
    mask: FaceMask,
    box: tuple[int, int, int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Blend ``rendered_crop`` ((S, S, 3) uint8, already colour-matched) into ``image`` in place
    inside ``box``; returns the (h, w) weights used."""
    x0, y0, x1, y1 = box
    weights = box_weights(mask, alignment, box)
    original = image[y0:y1, x0:x1]
    region = paste_region(rendered_crop, alignment, box).astype(np.float32)
    if alignment.scale < 1:  # upsampled: restore the photo's sharpness and grain
        blurred = cv2.GaussianBlur(region, (0, 0), 1.0 / alignment.scale * 0.5)
        region = region + 0.3 * (region - blurred)
        sigma = grain_sigma(original, weights)
        if sigma > 0:
            noise = rng.normal(0, sigma, region.shape[:2]).astype(np.float32)
            region = region + noise[..., None]
    w = weights[..., None].astype(np.float32)
    blended = original.astype(np.float32) * (1 - w) + region * w
    image[y0:y1, x0:x1] = np.where(w > 0, blended.round().clip(0, 255), original).astype(np.uint8)
    return weights
