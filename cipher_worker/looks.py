"""What a viewer sees of a face besides who it is: gender, age, open eyes and mouth, skin tone,
and whether a change stayed on the face. The evaluation's yardsticks for "same kind of face".

Eye and mouth state come from the dense mesh (:mod:`cipher_worker.mesh`): an eye is closed
below :data:`EYE_CLOSED` lid gap per eye width (open eyes measure 0.18–0.36 on the bundled
photos), a mouth open above :data:`MOUTH_OPEN` lip gap per mouth width (closed ≈ 0.01, a
smile showing teeth 0.19–0.28). Skin tone is the median CIELAB colour of the inner face, and
ΔE is CIE76 in true L*a*b* units.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .facemask import grown, with_forehead
from .mesh import MeshResult

EYE_CLOSED = 0.12
MOUTH_OPEN = 0.08
GENDER_SURE = 0.8  # a gender judgement counts only when the judge is this sure
_NOSE_TIP = 1
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER = 33, 263
_INNER = 0.6  # the inner face: the oval shrunk this much about the nose tip


@dataclass(frozen=True)
class FaceState:
    eyes_closed: bool
    mouth_open: bool


def face_state(mesh: MeshResult) -> FaceState:
    return FaceState(float(np.mean(mesh.eye_openness())) < EYE_CLOSED, mesh.mouth_openness() > MOUTH_OPEN)


def inner_face(mesh: MeshResult) -> np.ndarray:
    """(K, 2) polygon of the inner face (cheeks, nose, mouth, lower forehead) in image pixels."""
    centre = mesh.points[_NOSE_TIP, :2]
    return centre + (mesh.face_oval() - centre) * _INNER


def _polygon_pixels(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def skin_lab(image: np.ndarray, mesh: MeshResult) -> np.ndarray:
    """Median L*a*b* (3,) of the inner face of an (H, W, 3) uint8 RGB image."""
    inside = _polygon_pixels(image.shape, inner_face(mesh))
    pixels = image[inside]
    if len(pixels) == 0:
        return np.full(3, np.nan)
    lab = cv2.cvtColor(pixels[None].astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[0]
    return np.median(lab, axis=0)


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """CIE76 colour difference of two L*a*b* colours."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def face_outline(mesh: MeshResult, growth: float = 0.0) -> np.ndarray:
    """(K, 2) image-pixel polygon of what counts as the face: the mesh's outline, which stops on the
    upper forehead, with its forehead stretched to where a hairline can lie
    (:func:`~cipher_worker.facemask.with_forehead`), upright as the eyes are, as the pipeline's
    crops are; ``growth`` scales the outline about its centre first."""
    oval = grown(mesh.face_oval(), growth)
    eye_line = mesh.points[_LEFT_EYE_OUTER, :2] - mesh.points[_RIGHT_EYE_OUTER, :2]
    x = eye_line / np.linalg.norm(eye_line)
    frame = np.column_stack([x, [-x[1], x[0]]])  # columns: eye line, and down the face
    centre = oval.mean(0)
    return with_forehead((oval - centre) @ frame) @ frame.T + centre


def box_outline(box: tuple[float, float, float, float]) -> np.ndarray:
    """(4, 2) image-pixel polygon of a detector's (x, y, w, h) box: what counts as the face where
    the mesh finds none (a profile), since its points there are not on the face."""
    x, y, w, h = box
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)


def off_face_share(original: np.ndarray, changed: np.ndarray, outlines: list[np.ndarray]) -> tuple[int, int]:
    """(changed pixels outside every face outline, all changed pixels) between two (H, W, 3) images.

    ``outlines``: (K, 2) image-pixel polygons (:func:`face_outline`), each grown by 2% of its
    size so anti-aliasing along the outline does not count as off the face."""
    diff = np.any(original != changed, axis=-1)
    faces = np.zeros(diff.shape, bool)
    for outline in outlines:
        centre = outline.mean(0)
        faces |= _polygon_pixels(diff.shape, centre + (outline - centre) * 1.02)
    return int((diff & ~faces).sum()), int(diff.sum())
