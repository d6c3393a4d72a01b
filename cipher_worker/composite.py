"""Putting a rendered face back into the photo, inside its mask (:mod:`cipher_worker.facemask`).

The rendered crop is colour-matched to the original skin (Lab mean and spread of the inner
face), then offset by a smooth membrane that takes the colour step at the mask's edge to
zero — the photo's own skin just outside the mask against the render just inside, spread
inwards, as gradient-domain (Poisson) blending does; hair, a collar or a wall beside the mask
pull nothing — and warped back at full resolution with the photo's sharpness and grain. Pixels
where the mask is zero are left exactly as they were: this is what makes exact recovery and
"background untouched" hold. A face the generator cannot draw is blurred in place instead
(:func:`obscure_face`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import Alignment, paste_region
from .facemask import Mask, box_weights

_GREY_CHROMA = 1.0  # a skin's a/b spread below this (8-bit Lab) is a black-and-white photo's
_SKIN_REACH = np.array([25.0, 8.0, 8.0], np.float32)  # Lab (8-bit) beyond 3 spreads that still reads as skin
_GRAIN_SAMPLES = 20_000  # Laplacian values a grain estimate looks at
_OBSCURE_SIGMA = 1.5  # an unfound face's blur, × its eye distance: no eyes, nose or mouth left to tell


def lab_stats(crop_rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Lab mean and spread (6,) float64 of an (S, S, 3) uint8 crop inside (S, S) weights."""
    return _moments(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2LAB), weights)


def _moments(lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`lab_stats` of an (S, S, 3) Lab crop (OpenCV's 8-bit scale)."""
    w = weights[..., None] / max(float(weights.sum()), 1e-6)
    lab = lab.astype(np.float64)
    mean = (lab * w).sum((0, 1))
    spread = np.sqrt((((lab - mean) ** 2) * w).sum((0, 1)))
    return np.concatenate([mean, spread])


def match_colours(rendered: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shift the rendered crop's Lab statistics inside ``weights`` to ``target`` (see :func:`lab_stats`).

    rendered: (S, S, 3) uint8 RGB; weights: (S, S) → (S, S, 3) float32 Lab (OpenCV's 8-bit scale)."""
    src = cv2.cvtColor(rendered, cv2.COLOR_RGB2LAB).astype(np.float32)
    src[..., 1:] = _chroma_toward(src[..., 1:], weights, target[1:3] - 128.0)
    stats = _moments(src, weights)  # of the shifted render itself, which the gains below apply to
    mu_s, sd_s = stats[:3], stats[3:] + 1e-3
    mu_r, sd_r = target[:3], target[3:]
    # a flat render must not blow up noise; chroma gains stay close to 1 or eyes turn colourful,
    # except on a black-and-white photo, where a stranger takes its greys
    chroma_floor = 0.0 if max(sd_r[1], sd_r[2]) < _GREY_CHROMA else 0.8
    gain = np.clip(sd_r / sd_s, [0.6, chroma_floor, chroma_floor], [1.6, 1.25, 1.25])
    return ((src - mu_s) * gain + mu_r).astype(np.float32)


def _chroma_toward(ab: np.ndarray, weights: np.ndarray, want: np.ndarray) -> np.ndarray:
    """(S, S, 2) a, b of a render with its skin's mean chroma moved to ``want`` (a, b about grey),
    its greys left grey.

    A plain mean shift takes a rosy render's eye whites and teeth as far as its skin, and a pale
    photo's strangers come out with teal eyes. Here a pixel as saturated as the skin moves by the
    whole shift, a grey pixel is only scaled (and so stays grey), and those between are mixed."""
    w = weights / max(float(weights.sum()), 1e-6)
    z = (ab[..., 0] - 128.0) + 1j * (ab[..., 1] - 128.0)  # OpenCV's 8-bit Lab puts grey at 128
    mean = complex((z * w).sum())
    if abs(mean) < 1.0:  # a grey render: nothing to scale about
        return ab
    target = complex(want[0], want[1])
    ratio = target / mean
    ratio *= np.clip(abs(ratio), 0.25, 4.0) / max(abs(ratio), 1e-6)
    along = np.clip((z * np.conj(mean)).real / abs(mean) ** 2, 0.0, 1.0)
    moved = along * (z + target - mean) + (1.0 - along) * z * ratio
    return np.stack([moved.real, moved.imag], -1).astype(np.float32) + 128.0


@dataclass(frozen=True)
class EdgeMembrane:
    """A smooth offset that takes a render to the photo's colours at the edge of a mask and fades
    to nothing inside it: the low frequencies of a Poisson blend, without its solve. The photo's
    side (the ring just outside the mask) is measured once per face; :meth:`apply` then costs two
    blurs per render, so every candidate of a face can be previewed."""

    photo_side: np.ndarray  # (S, S, 3) float32 Lab: the photo around the mask, spread inwards
    render_edge: np.ndarray  # (S, S) float32: where the render is sampled, just inside the mask
    render_norm: np.ndarray  # (S, S, 1) float32: the blurred support of ``render_edge``
    fade: np.ndarray  # (S, S, 1) float32: 1 where the stranger meets the photo, 0 where the mask is full
    sigma: float

    @classmethod
    def around(cls, photo_crop: np.ndarray, weights: np.ndarray, skin: np.ndarray) -> EdgeMembrane:
        """photo_crop: (S, S, 3) uint8 RGB; weights: (S, S) mask weights over it; skin: the face's
        Lab statistics (:func:`lab_stats`). Only pixels the mask leaves alone are read, so recovery
        measures the same ones. Only skin beside the mask pulls the render's edge: a dark collar,
        a beard or hair below a jaw would otherwise spread a shadow over the stranger's chin."""
        size = weights.shape[0]
        inside = (weights > 0).astype(np.uint8)
        ring_width = max(2, round(size / 24))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_width + 1,) * 2)
        ring = (cv2.dilate(inside, kernel) - inside).astype(np.float32)
        render_edge = (inside - cv2.erode(inside, kernel)).astype(np.float32)
        sigma = size / 10
        photo = cv2.cvtColor(photo_crop, cv2.COLOR_RGB2LAB).astype(np.float32)
        reach = 3 * np.asarray(skin[3:], np.float32) + _SKIN_REACH
        distance = np.sqrt((((photo - np.asarray(skin[:3], np.float32)) / reach) ** 2).sum(-1))
        skin_ring = ring * np.clip(2 - 2 * distance, 0, 1)  # 1 within the skin's reach, 0 past twice that
        # how much of the ring near each pixel is skin: where none is, the render keeps its own edge
        trust = _blur(skin_ring, sigma) / np.maximum(_blur(ring, sigma), 1e-4)
        fade = ((1 - np.clip(weights, 0, 1)) * np.clip(trust, 0, 1)).astype(np.float32)[..., None]
        photo_side = _normalized_blur(photo, skin_ring, sigma)
        return cls(photo_side, render_edge, _blur(render_edge, sigma)[..., None], fade, sigma)

    def apply(self, lab: np.ndarray) -> np.ndarray:
        """(S, S, 3) float32 Lab render → the same with its edge taken to the photo's colours."""
        render_side = _blur(lab * self.render_edge[..., None], self.sigma) / np.maximum(self.render_norm, 1e-4)
        return lab + (self.photo_side - render_side) * self.fade


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(values, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _normalized_blur(values: np.ndarray, support: np.ndarray, sigma: float) -> np.ndarray:
    return _blur(values * support[..., None], sigma) / np.maximum(_blur(support, sigma)[..., None], 1e-4)


def grain_sigma(region: np.ndarray, weights: np.ndarray) -> float:
    """Robust noise level of an (h, w, 3) uint8 region inside the mask (MAD of a Laplacian)."""
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    values = lap[weights > 0.5]
    if values.size < 16:
        return 0.0
    values = values[:: max(1, values.size // _GRAIN_SAMPLES)]  # a median needs no more
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
    if alignment.scale < 1:  # upsampled: restore the photo's sharpness (an unsharp mask of the crop)
        crop = rendered_crop.astype(np.float32)
        sharp = cv2.addWeighted(crop, 1.3, cv2.GaussianBlur(crop, (0, 0), 0.5), -0.3, 0)
        rendered_crop = sharp.round().clip(0, 255).astype(np.uint8)
    region = paste_region(rendered_crop, alignment, box)
    if alignment.scale < 1:  # … and its grain
        region = _with_grain(region, original, weights, rng)
    # weight 0 gives back the photo's pixel exactly: (1·photo + 0·render) / 1
    image[y0:y1, x0:x1] = cv2.blendLinear(original, region, 1 - weights, weights)
    return weights


def obscure_face(
    image: np.ndarray,
    alignment: Alignment,
    mask: Mask,
    box: tuple[int, int, int, int],
    eye_gap: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Blur ``image`` in place inside ``mask`` over ``box``, with the photo's grain put back: for a
    face the generator cannot draw (see :attr:`cipher_worker.mesh.MeshResult.found`). ``eye_gap``
    is the eye distance in crop pixels. Returns the (h, w) weights used."""
    x0, y0, x1, y1 = box
    weights = box_weights(mask, alignment, box)
    original = image[y0:y1, x0:x1]
    sigma = _OBSCURE_SIGMA * eye_gap / alignment.scale  # in image pixels
    # a blur this wide costs a fraction at a few pixels per sigma, and loses nothing
    shrink = min(1.0, 3.0 / sigma)
    small = cv2.resize(original, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma * shrink, borderType=cv2.BORDER_REFLECT)
    blurred = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    blurred = _with_grain(blurred, original, weights, rng)
    image[y0:y1, x0:x1] = cv2.blendLinear(original, blurred, 1 - weights, weights)
    return weights


def _with_grain(region: np.ndarray, original: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) uint8 region with the noise of the photo's ``original`` pixels under ``weights`` added."""
    sigma = grain_sigma(original, weights)
    if sigma <= 0:
        return region
    noise = rng.normal(0, sigma, region.shape[:2]).astype(np.float32)
    return cv2.add(region, cv2.merge([noise] * 3), dtype=cv2.CV_8U)
