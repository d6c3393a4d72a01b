"""Dense face landmarks: MediaPipe's 468-point face mesh (``face_landmark.tflite`` from the
``mediapipe`` wheel), run by OpenCV's DNN module — ``mediapipe`` itself is never imported.

The model sees a 192 × 192 crop of a square ROI, rotated so the eyes are horizontal. MediaPipe's
tracking ROI is the mesh's bounding box × 1.5 (``FaceLandmarkLandmarksToRoi``); we only have
YuNet's five points, so the ROI is the one that box converges to, measured on the test photos:
centred midway between the eye and mouth midpoints, side 3.8 × max(eye distance, eye-to-mouth).
A single pass there lands within 0.015 inter-ocular distances (mean) of the converged mesh.
The input is RGB in [0, 1], as the graph's ImageToTensorCalculator gives it.

YuNet's landmarks can be wrong where its face is not: on a photo turned on its side it finds the
faces but puts their eyes where no eyes are, and a profile can get its eye line drawn down the
nose. The mesh then finds no face in the ROI (presence near 0, where real faces read over 0.8).
Such a face is tried again in the ROI turned by a quarter, a half and three quarters, and the
turn the model is sure it finds a face in is kept (:attr:`MeshResult.turned`): its points, and so its
:meth:`MeshResult.landmarks5`, are then right where YuNet's were not.

Naming follows :mod:`.detect`: "right" is the subject's right, the image-left one in a frontal
photo (mesh points 33/133 and YuNet landmark 0).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import VeilError

MESH_FILE = "modules/face_landmark/face_landmark.tflite"
INPUT_SIZE = 192
_ROI_SIDE = 3.8  # × max(eye distance, eye-mid to mouth-mid), see the module docstring
RETRY_PRESENCE = 0.5  # a fit less sure than this that a face is there is tried again, turned …
TURNED_PRESENCE = 0.95  # … and a turn kept only this sure (a hand can read 0.8 upside down)
_SAME_FACE = 1.0  # two fits whose eyes' midpoints are this close (× eye distance) are one face, see distinct

# MediaPipe's FACEMESH_FACE_OVAL walked from the top of the forehead, image-right side first
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
# eye contours: corners (outer, inner) and three upper/lower lid pairs, outer to inner
_RIGHT_EYE = ((33, 133), ((160, 144), (159, 145), (158, 153)))
_LEFT_EYE = ((263, 362), ((387, 373), (386, 374), (385, 380)))
_MOUTH_CORNERS = (61, 291)
# brows, eye corners, nose tip and the outer lips: their hull holds what a face is recognised by
FEATURES = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276,
            33, 133, 263, 362, 1, 61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267,
            0, 37, 39, 40, 185)  # fmt: skip
_INNER_LIPS = (13, 14)
_FOREHEAD, _CHIN, _NOSE_TIP = 10, 152, 1
EXPRESSION = ("eye openness", "mouth openness", "smile", "yaw", "pitch")
# symmetric (subject's right, subject's left) pairs: the oval's two halves, eye and mouth corners
_PAIRS = np.array([(FACE_OVAL[-k], FACE_OVAL[k]) for k in range(1, 18)] + [(33, 263), (133, 362), (61, 291)])


def mesh_model_path() -> Path:
    spec = importlib.util.find_spec("mediapipe")  # locates the wheel without importing it
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / MESH_FILE
        if path.is_file():
            return path
    raise VeilError("the face mesh model is missing: run `pip install --no-deps mediapipe==0.10.21`")


@dataclass(frozen=True)
class MeshResult:
    """``points``: (468, 3) float64 — x, y in image pixels, z relative depth in the same
    pixel scale (MediaPipe's sign: smaller is nearer the camera);
    ``presence``: the model's face-presence probability in [0, 1]."""

    points: np.ndarray
    presence: float
    turned: int = 0  # quarter turns of the ROI it was found in (0: upright on YuNet's eye line)

    @property
    def found(self) -> bool:
        """Whether the model is sure enough there is a face to trust its points (profiles and
        things that are not faces read near 0)."""
        return self.presence >= RETRY_PRESENCE

    def expression(self) -> np.ndarray:
        """(5,) what a stranger must keep of this face besides its landmarks, in the order of
        :data:`EXPRESSION`: mean eye openness, mouth openness, smile, yaw and pitch (degrees)."""
        yaw, pitch, _ = self.head_pose()
        return np.array([float(np.mean(self.eye_openness())), self.mouth_openness(), self.smile(), yaw, pitch])

    def landmarks5(self) -> np.ndarray:
        """(5, 2) YuNet-order points (eye centres, nose tip, mouth corners) in image pixels,
        for judges that want YuNet's landmarks on a face the detector has not seen."""
        p = self.points[:, :2]
        eyes = [p[list(_RIGHT_EYE[0])].mean(0), p[list(_LEFT_EYE[0])].mean(0)]
        return np.stack([*eyes, p[_NOSE_TIP], *p[list(_MOUTH_CORNERS)]])

    def face_oval(self) -> np.ndarray:
        """(36, 2) silhouette polygon in image pixels: forehead, jaw, chin, closed implicitly."""
        return self.points[list(FACE_OVAL), :2].copy()

    def features(self) -> np.ndarray:
        """(K, 2) convex polygon in image pixels around brows, eyes, nose and lips."""
        hull = cv2.convexHull(self.points[list(FEATURES), :2].astype(np.float32))
        return hull.reshape(-1, 2).astype(np.float64)

    def eye_openness(self) -> tuple[float, float]:
        """(right, left) eye aspect ratio: mean lid gap / corner-to-corner width, in 3-D so
        that turning the head does not shrink the width. Open eyes read 0.18–0.36 on the test photos."""
        return self._aspect(*_RIGHT_EYE), self._aspect(*_LEFT_EYE)

    def mouth_openness(self) -> float:
        """Inner-lip gap / mouth-corner width (3-D): ≈ 0.01 with closed lips, 0.2–0.28 for the
        toothy smiles in the test photos."""
        return self._aspect(_MOUTH_CORNERS, (_INNER_LIPS,))

    def smile(self) -> float:
        """Height of the mouth corners above the inner-lip centre along the face's up axis,
        / mouth width. Rises with a smile; the neutral value differs from face to face."""
        p = self.points
        centre = p[list(_INNER_LIPS)].mean(0)
        corners = p[list(_MOUTH_CORNERS)].mean(0)
        width = np.linalg.norm(p[_MOUTH_CORNERS[1]] - p[_MOUTH_CORNERS[0]])
        return float((centre - corners) @ self.rotation()[:, 1] / width)

    def rotation(self) -> np.ndarray:
        """(3, 3) face axes in camera axes (x right, y down, z away from the camera), as
        columns: subject's right → left, forehead → chin, face → back of the head."""
        p = self.points
        ex = (p[_PAIRS[:, 1]] - p[_PAIRS[:, 0]]).sum(0)
        ex /= np.linalg.norm(ex)
        ey = p[_CHIN] - p[_FOREHEAD]
        ey -= (ey @ ex) * ex
        ey /= np.linalg.norm(ey)
        return np.column_stack([ex, ey, np.cross(ex, ey)])

    def head_pose(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees. yaw > 0: the nose points to the image's right;
        pitch > 0: it points up (0 when forehead top and chin are at equal depth, so faces
        looking at the camera read −4° to −11°); roll > 0: the eye line turns clockwise on
        screen (the image-right eye is lower). Flipping the photo negates yaw and roll."""
        rot = self.rotation()
        nose = -rot[:, 2]
        yaw = np.arctan2(nose[0], -nose[2])
        pitch = np.arctan2(-nose[1], np.hypot(nose[0], nose[2]))
        # what is left after undoing yaw and pitch is a rotation about the viewing axis
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        r_yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        rest = (r_yaw @ r_pitch).T @ rot
        roll = np.arctan2(rest[1, 0], rest[0, 0])
        return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))

    def _aspect(self, corners: tuple[int, int], gaps: tuple[tuple[int, int], ...]) -> float:
        p = self.points
        width = np.linalg.norm(p[corners[0]] - p[corners[1]])
        gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in gaps])
        return float(gap / width)


def distinct(results: list[MeshResult]) -> list[int]:
    """Indices (in order) of the results that are not a found face seen twice.

    YuNet can box one face lying on its side twice, far enough apart to pass its own overlap
    test; the turned retry then finds the same face in both (one fit a little off), and two
    strangers would be drawn over each other. Two faces side by side, even cheek to cheek, have
    their eyes' midpoints some eye distances apart; of two found fits closer than
    :data:`_SAME_FACE` eye distances, the surer one is kept."""
    mids = [r.landmarks5()[:2].mean(0) for r in results]
    gaps = [float(np.linalg.norm(np.diff(r.landmarks5()[:2], axis=0))) for r in results]
    kept: list[int] = []
    for i in sorted(range(len(results)), key=lambda i: -results[i].presence):
        twice = results[i].found and any(
            results[j].found and np.linalg.norm(mids[i] - mids[j]) < _SAME_FACE * max(gaps[i], gaps[j]) for j in kept
        )
        if not twice:
            kept.append(i)
    return sorted(kept)


def roi_matrix(landmarks5: np.ndarray) -> np.ndarray:
    """(5, 2) YuNet landmarks in image px → (2, 3) float64 affine, image → model input px."""
    lm = landmarks5.astype(np.float64)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    eye_line = lm[1] - lm[0]
    # max(): turning the head shortens the eye distance, nodding shortens eye-to-mouth
    side = _ROI_SIDE * max(float(np.linalg.norm(eye_line)), float(np.linalg.norm(mouth - eyes)))
    cos, sin = eye_line / np.linalg.norm(eye_line) * (INPUT_SIZE / side)
    linear = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line onto +x, then scales
    centre = (eyes + mouth) / 2
    return np.column_stack([linear, INPUT_SIZE / 2 - linear @ centre])


def _turned(matrix: np.ndarray, quarters: int) -> np.ndarray:
    """An image → input affine followed by ``quarters`` quarter turns about the input's centre."""
    cos, sin = np.cos(quarters * np.pi / 2), np.sin(quarters * np.pi / 2)
    turn = np.array([[cos, -sin], [sin, cos]])
    centre = np.full(2, INPUT_SIZE / 2)
    return np.column_stack([turn @ matrix[:, :2], turn @ (matrix[:, 2] - centre) + centre])


class FaceMesh:
    """Thread-safe: one OpenCV network, used under a lock."""

    def __init__(self) -> None:
        self._net = cv2.dnn.readNetFromTFLite(str(mesh_model_path()))
        self._outputs = self._net.getUnconnectedOutLayersNames()
        self._lock = threading.Lock()

    def fit(self, image_rgb: np.ndarray, landmarks5: np.ndarray) -> MeshResult:
        """(H, W, 3) uint8 RGB and a face's (5, 2) YuNet landmarks → :class:`MeshResult`."""
        return self.fit_all([image_rgb], np.asarray(landmarks5)[None])[0]

    def fit_all(self, images_rgb: list[np.ndarray], landmarks5: np.ndarray) -> list[MeshResult]:
        """One face per image, (N, 5, 2) landmarks, in one batch (a third cheaper per face than one by
        one); a face the model does not find is tried again in turned ROIs (module docstring)."""
        for image in images_rgb:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        matrices = [roi_matrix(np.asarray(points).reshape(5, 2)) for points in landmarks5]
        results = self._fit(images_rgb, matrices)
        lost = [i for i, r in enumerate(results) if not r.found]
        if lost:  # one batch for every turn of every lost face
            turns = [(i, q) for i in lost for q in (1, 2, 3)]
            tries = self._fit([images_rgb[i] for i, _ in turns], [_turned(matrices[i], q) for i, q in turns])
            for (i, q), found in zip(turns, tries, strict=True):
                if found.presence >= TURNED_PRESENCE and found.presence > results[i].presence:
                    results[i] = MeshResult(found.points, found.presence, q)
            # YuNet's wrong points made a wrong ROI too: once more in the one the found mesh makes
            turned = [i for i in lost if results[i].turned]
            again = self._fit([images_rgb[i] for i in turned], [roi_matrix(results[i].landmarks5()) for i in turned])
            for i, found in zip(turned, again, strict=True):
                if found.presence >= TURNED_PRESENCE:
                    results[i] = MeshResult(found.points, found.presence, results[i].turned)
        return results

    def _fit(self, images_rgb: list[np.ndarray], matrices: list[np.ndarray]) -> list[MeshResult]:
        """The model on each image's ROI (a (2, 3) image → input affine), in one batch."""
        if len(images_rgb) == 0:
            return []
        crops = []
        for image, matrix in zip(images_rgb, matrices, strict=True):
            # BORDER_REPLICATE is what MediaPipe's ImageToTensorCalculator does past the edges
            crops.append(
                cv2.warpAffine(
                    image, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
            )
        # the graph feeds this model [0, 1] floats (ImageToTensorCalculator float range)
        blob = cv2.dnn.blobFromImages(crops, 1 / 255)
        with self._lock:
            self._net.setInput(blob)
            outs = self._net.forward(self._outputs)
        raws = next(o for o in outs if o.size == len(crops) * 468 * 3).reshape(len(crops), 468, 3).astype(np.float64)
        logits = next(o for o in outs if o.size == len(crops)).reshape(-1).astype(np.float64)
        results = []
        for raw, logit, matrix in zip(raws, logits, matrices, strict=True):
            inverse = cv2.invertAffineTransform(matrix)
            points = np.empty_like(raw)
            points[:, :2] = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
            points[:, 2] = raw[:, 2] * np.hypot(inverse[0, 0], inverse[1, 0])  # image px per input px
            results.append(MeshResult(points, float(1 / (1 + np.exp(-np.clip(logit, -60, 60))))))
        return results
