"""Putting a rendered face back into the photo, inside its mask (:mod:`cipher_worker.facemask`).

The rendered crop is colour-matched to the original skin (Lab mean and spread of the inner
face), then offset by a smooth membrane that takes the colour step at the mask's edge to
zero — the photo's own pixels just outside the mask against the render just inside, spread
inwards, as gradient-domain (Poisson) blending does — and warped back at full resolution
with the photo's sharpness and grain. Pixels where the mask is zero are left exactly as
they were: this is what makes exact recovery and "background untouched" hold.
"""

from __future__ import annotations

import cv2
import numpy as np

from .align import Alignment, paste_region
from .facemask import Mask, box_weights


def lab_stats(crop_rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Lab mean and spread (6,) float64 of an (S, S, 3) uint8 crop inside (S, S) weights."""
    w = weights[..., None] / max(float(weights.sum()), 1e-6)
    lab = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    mean = (lab * w).sum((0, 1))
    spread = np.sqrt((((lab - mean) ** 2) * w).sum((0, 1)))
    return np.concatenate([mean, spread])


def match_colours(rendered: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shift the rendered crop's Lab statistics inside ``weights`` to ``target`` (see :func:`lab_stats`).

    rendered: (S, S, 3) uint8 RGB; weights: (S, S) → (S, S, 3) float32 Lab (OpenCV's 8-bit scale)."""
    stats = lab_stats(rendered, weights)
    mu_s, sd_s = stats[:3], stats[3:] + 1e-3
    mu_r, sd_r = target[:3], target[3:]
    # a flat render must not blow up noise; chroma gains stay close to 1 or eyes turn colourful
    gain = np.clip(sd_r / sd_s, [0.6, 0.8, 0.8], [1.6, 1.25, 1.25])
    src = cv2.cvtColor(rendered, cv2.COLOR_RGB2LAB).astype(np.float32)
    return ((src - mu_s) * gain + mu_r).astype(np.float32)


def edge_membrane(lab: np.ndarray, photo_crop: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``lab`` plus a smooth offset that equals (photo − render) on the ring just outside the mask
    and decays inwards: the low frequencies of a Poisson blend, without its solve.

    lab: (S, S, 3) float32 Lab render; photo_crop: (S, S, 3) uint8 RGB; weights: (S, S)."""
    size = weights.shape[0]
    inside = (weights > 0).astype(np.uint8)
    ring_width = max(2, round(size / 24))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_width + 1,) * 2)
    ring = (cv2.dilate(inside, kernel) - inside).astype(np.float32)  # the photo just outside
    render_edge = (inside - cv2.erode(inside, kernel)).astype(np.float32)  # the render just inside
    photo = cv2.cvtColor(photo_crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    sigma = size / 10
    offset = _normalized_blur(photo, ring, sigma) - _normalized_blur(lab, render_edge, sigma)
    # full strength where the stranger meets the photo, none where the mask is full: the face
    # keeps the skin colour it was matched to, only its edge takes on the surroundings
    fade = 1 - np.clip(weights, 0, 1).astype(np.float32)
    return lab + offset * fade[..., None]


def _normalized_blur(values: np.ndarray, support: np.ndarray, sigma: float) -> np.ndarray:
    num = cv2.GaussianBlur(values * support[..., None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(support, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[..., None]
    return num / np.maximum(den, 1e-4)


def grain_sigma(region: np.ndarray, weights: np.ndarray) -> float:
    """Robust noise level of an (h, w, 3) uint8 region inside the mask (MAD of a Laplacian)."""
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    values = lap[weights > 0.5]
    if values.size < 16:
        return 0.0
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.4826 * mad / np.sqrt(20.0)  # a 4-neighbour Laplacian amplifies white noise by √20


def to_rgb(lab: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 Lab (OpenCV's 8-bit scale) → uint8 RGB."""
    return cv2.cvtColor(lab.clip(0, 255).round().astype(np.uint8), cv2.COLOR_LAB2RGB)


def composite_face(
    image: np.ndarray,
    rendered_crop: np.ndarray,
    alignment: Alignment,
    mask: Mask,
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
