"""Measure the ``stylegan2`` codec's face template: where FFHQ alignment puts YuNet's 5 points.

e4e, pSp and every FFHQ StyleGAN2 expect faces aligned by the FFHQ recipe, which works on
dlib's 68 landmarks: the crop is a square centred a tenth of the eye-to-mouth vector below
the eyes, its side 4× the eye distance (or 3.6× the eye-to-mouth distance if larger),
turned with the eye line. Veil aligns with YuNet's 5 points instead (one detector for every
codec), so the template is the mean position, in FFHQ crops of side 1, of YuNet's points
on real faces. ``python -m lab.train ffhq-template`` prints it for the bundled
photos; ``codecs.stylegan2.codec.FFHQ_TEMPLATE`` holds the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cipher_worker.detect import Face, FaceDetector
from lab.facemetrics import dlib_model_dir


@dataclass(frozen=True)
class Square:
    """An FFHQ crop in photo pixels: top-left corner and the two edge vectors."""

    origin: np.ndarray
    x_edge: np.ndarray
    y_edge: np.ndarray

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels → coordinates in the crop, (0, 0) top left to (1, 1) bottom right."""
        rel = points - self.origin
        return np.stack(
            [rel @ self.x_edge / (self.x_edge @ self.x_edge), rel @ self.y_edge / (self.y_edge @ self.y_edge)], -1
        )


def ffhq_square(landmarks68: np.ndarray) -> Square:
    """The FFHQ crop for dlib's 68 landmarks (the recipe NVIDIA used to build FFHQ)."""
    eye_left, eye_right = landmarks68[36:42].mean(0), landmarks68[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (landmarks68[48] + landmarks68[54]) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # the eye line, tilted by the face's axis
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x)
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    return Square(origin=centre - x - y, x_edge=2 * x, y_edge=2 * y)


def ffhq_faces(photos: list[np.ndarray]) -> Iterator[tuple[Face, Square]]:
    """Every YuNet face in ``photos`` with the FFHQ crop that dlib's landmarks give it."""
    import dlib

    models = dlib_model_dir()
    if models is None:
        raise RuntimeError("dlib's landmark models (face_recognition_models) are not installed")
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    detector = FaceDetector()
    for rgb in photos:
        for face in detector.detect(rgb):
            x, y, w, h = face.box
            shape = predictor(rgb, dlib.rectangle(int(x), int(y), int(x + w), int(y + h)))
            yield face, ffhq_square(np.array([[p.x, p.y] for p in shape.parts()], float))


def measure(photos: list[np.ndarray]) -> np.ndarray:
    """(faces, 5, 2): every YuNet face's landmarks in its FFHQ crop (side 1)."""
    return np.array([square.to_unit(face.landmarks) for face, square in ffhq_faces(photos)])


def symmetric_mean(points: np.ndarray) -> np.ndarray:
    """The mean template, made left-right symmetric (YuNet order: eyes, nose, mouth corners)."""
    mean = points.mean(0)
    mirrored = mean[[1, 0, 2, 4, 3]] * [-1, 1] + [1, 0]
    return (mean + mirrored) / 2


def main() -> None:
    from lab.evaluate import load_photos

    points = measure([p.pixels for p in load_photos(None)])
    template = symmetric_mean(points)
    print(f"{len(points)} faces; FFHQ template (fractions of the crop side), spread ± {points.std(0).max():.3f}:")
    print(np.array2string(template.round(3), separator=", "))
