"""Choosing each face's stranger among its candidate pads (see :mod:`cipher_worker.cipher`).

The dcgan64 latent carries gender and age only non-linearly (a linear probe on z reads the
judged gender no better than the base rate), and its faces vary wildly in skin tone,
lighting and accessories (glasses, hat bands, beards) with the identity coordinates. None of
that can be an attribute coordinate, so every face gets ``codec.candidates`` independent
encryptions of its identity, and the one that reads most like the original — same gender
and age, eyes and mouth as open, the same pose and skin tone and the same coarse light and
dark layout (no glasses, band or beard where the original has none) — is kept. The envelope
stores which one, so decryption stays one exact subtraction, and the choice depends only on
what the candidates look like, never on the identity itself.

Judging is staged by cost. A codec that can foresee its strangers' looks from the latent
(:mod:`cipher_worker.codecs.appearance`) has all candidates screened that way first
(:func:`shortlist`); only the ``codec.finalists`` likeliest are rendered. Their pixel measures
and the gender network rank them; the age network then judges the best :data:`_AGED` and
their age gap joins the ranking, and the best :data:`_FINAL_POOL` of those are measured as the
evaluation measures the anonymized photo: the dense mesh on each preview (eye and mouth
openness, smile and pose, in place of what was foreseen). Previews, not bare renders: blended into
the photo's crop, a render's mouth can read open where the bare render read closed, and the
other way round (on the unseen set, seed 1 / 2, measuring previews took mouth flips from 10.9 /
10.0% to 10.2 / 9.3%). The compositor needs the chosen render's own mesh (its outline bounds what
is pasted), which :func:`choose` fits and returns: three mesh runs a face. A third meshed
finalist cost about 12 ms a face more: a little less age gap and fewer mouth flips, but more
landmark shift and over the time budget.

Age cannot be foreseen: this generator's judged age changes too fast with the latent (two
latents 0.3 apart per coordinate agree only r 0.66), so the appearance model, given it as a
label, explained 2% of its variance on held-out faces, while the network agrees with itself
(r 0.8–0.9 across shifts and scales of a render). The strangers' judged ages do spread (5–95%:
20–46 years), so age is chosen among rendered finalists. Since the networks run on ONNX Runtime
(about 1 ms an age), every rendered finalist is aged: on the unseen set (seed 1) the median age
gap went from 7.0 to 6.6 years, mouth flips from 11.3 to 10.7%, dlib re-identification from 8.1
to 7.7%, for about 3 ms a face. Before that, judging three rather than two, with
an age gap weighing twice what it did (and a sure stranger of the other gender half as much
again, so that gender does not pay for it), took the median age gap on the unseen photo set
(docs/unseen-photos.md, ``lab eval --keys 3``) from 7.3 to 6.9 years (seed 1) and 8.0 to 7.1
(seed 2), and gender kept from 91–92% to 92–93%, for one age network run (≈ 3 ms) a face more.
Judged at the original's landmarks the gain looks larger (7.3 to 5.5 on one key): the network's
reading moves with the landmarks it is given (r 0.6 between the original's and the stranger's
re-detected ones, which the evaluation uses), so part of what is chosen for is that jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agegender import AgeGender, AgeGenderJudge
from .codecs.appearance import LOOKS
from .composite import lab_stats
from .looks import EYE_CLOSED, MOUTH_OPEN
from .mesh import EXPRESSION, FaceMesh, MeshResult

_FINAL_POOL = 2  # the finalists measured by the mesh and the age network
_SURE = 0.8  # a gender judgement this sure (either way) must be kept
# The gender network's reading of a face moves with how its chip is framed, and the photo is judged
# at the landmarks found on it, not the original's: the mean of the readings at the original's
# landmarks and spread 5% wider and narrower kept gender on 92.7 / 90.1% of the unseen set's sure
# originals (seed 1 / 2) where one reading kept it on 91.9 / 89.2%, for two gender runs (32 px) a candidate
_GENDER_FRAMINGS = (1.05, 0.95)
_GENDER_WEIGHT = 12.0  # the cost of a sure stranger of the other gender (half that for an unsure original)
_AGED = 6  # the best ranked finalists whose previews the age network judges
_AGE_SCALE = 3.0  # years of age gap that cost 1
_LAYOUT_SCALE = 6.0  # mean lightness gap (of 255) over an 8 × 8 layout that costs 1
_SKIN_SCALE = 30.0  # skin tone ΔE (Lab, OpenCV's 8-bit scale) that costs 1
_GRID = 8
# the gap in each foreseen expression value that costs 1: eye and mouth openness and smile
# (mesh units, see cipher_worker.mesh), yaw and pitch in degrees
_EXPRESSION_SCALE = np.array([0.05, 0.04, 0.05, 8.0, 8.0])
_FORESEEN_EXPRESSION = slice(LOOKS.index("eye openness"), LOOKS.index("pitch") + 1)  # as in EXPRESSION
_FORESEEN_SKIN = slice(LOOKS.index("L"), LOOKS.index("b") + 1)
_STATE_FLIP = 2.0  # eyes or mouth foreseen closed where the original's are open, or open where closed
# A state is read against a threshold (cipher_worker.looks), and a stranger just past it on the
# original's side reads on the other about as often once it is in the photo: the flip's cost ramps
# from nothing this far (in openness) past the threshold on the original's side to all of it as far
# on the other. 0.04 took mouth flips on the unseen set from 10.2 to 10.0% (seed 1), 9.3 to 9.2% (seed 2).
_STATE_BAND = 0.04
# the same measured on a finalist's render, which the photo will show: 5 rather than 3 took the
# unseen set's mouth flips from 10.3 to 9.8% (seed 1) and 9.6 to 9.5% (seed 2), nothing else moving
_MEASURED_FLIP = 5.0
_FORESEEN_GENDER = 0.5  # foreseen gender counts half: the network judges the previews better


# Where accessories show, as (centre, half size) in units of the eye distance from the eye
# midpoint (x right, y down; the mouth is ≈ 1.1 below): glasses darken the bridge and the
# temples, a moustache the upper lip, a beard the chin, a hat band or fringe the forehead.
_PROBES = {
    "bridge": ((0.0, 0.0), (0.12, 0.1)),
    "right temple": ((-0.62, 0.0), (0.1, 0.12)),
    "left temple": ((0.62, 0.0), (0.1, 0.12)),
    "upper lip": ((0.0, 0.85), (0.25, 0.07)),
    "chin": ((0.0, 1.55), (0.3, 0.12)),
    "forehead": ((0.0, -0.7), (0.45, 0.12)),
}
_CHEEKS = (((-0.5, 0.55), (0.12, 0.12)), ((0.5, 0.55), (0.12, 0.12)))
_PROBE_SCALE = 40.0  # lightness gap (of 255) in one probe, relative to the cheeks, that costs 1
_FORESEEN_PROBES = slice(LOOKS.index("bridge"), LOOKS.index("bridge") + len(_PROBES))


@dataclass(frozen=True)
class Original:
    """What the strangers of N faces must look like: judged gender and age, the skin's Lab
    statistics (N, 6), the coarse layout (N, 8, 8) and the accessory probes (N, P) of the
    aligned crops, and the expression."""

    judged: AgeGender
    skin: np.ndarray
    layout: np.ndarray
    probes: np.ndarray
    expression: np.ndarray  # (N, 5) the mesh's expression (MeshResult.expression)


def _box_means(
    grey: np.ndarray, landmarks: np.ndarray, boxes: list[tuple[tuple[float, float], tuple[float, float]]]
) -> np.ndarray:
    """(N, S, S) lightness, (N, 5, 2) crop landmarks → (N, len(boxes)) mean lightness per box."""
    n, size = grey.shape[:2]
    integral = np.zeros((n, size + 1, size + 1))
    integral[:, 1:, 1:] = grey.cumsum(1).cumsum(2)
    eyes = landmarks[:, :2].mean(1)
    gap = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    out = np.empty((n, len(boxes)))
    rows = np.arange(n)
    for b, ((cx, cy), (hx, hy)) in enumerate(boxes):
        x0 = np.clip(np.round(eyes[:, 0] + (cx - hx) * gap), 0, size - 1).astype(int)
        x1 = np.clip(np.round(eyes[:, 0] + (cx + hx) * gap) + 1, x0 + 1, size).astype(int)
        y0 = np.clip(np.round(eyes[:, 1] + (cy - hy) * gap), 0, size - 1).astype(int)
        y1 = np.clip(np.round(eyes[:, 1] + (cy + hy) * gap) + 1, y0 + 1, size).astype(int)
        total = integral[rows, y1, x1] - integral[rows, y0, x1] - integral[rows, y1, x0] + integral[rows, y0, x0]
        out[:, b] = total / ((x1 - x0) * (y1 - y0))
    return out


def accessory_probes(crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 crops, (N, 5, 2) crop landmarks → (N, P) lightness of each probe
    (:data:`_PROBES`) minus the cheeks'."""
    grey = crops.astype(np.float32).mean(-1)
    cheeks = _box_means(grey, landmarks, list(_CHEEKS)).mean(1, keepdims=True)
    return _box_means(grey, landmarks, list(_PROBES.values())) - cheeks


def coarse_layout(crops: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 crops → (N, 8, 8) lightness at 8 × 8 over ``weights``, each face's
    mean and spread removed. At this scale a face has no identity left, but glasses, a hat
    band, a beard, an open mouth or closed eyes still show as a dark or light block."""
    grey = crops.astype(np.float32).mean(-1)
    n, size = grey.shape[:2]
    cell = size // _GRID
    span = cell * _GRID
    blocks = grey[:, :span, :span].reshape(n, _GRID, cell, _GRID, cell).mean((2, 4))
    w = weights[:span, :span].reshape(_GRID, cell, _GRID, cell).mean((1, 3))
    total = max(float(w.sum()), 1e-6)
    centre = (blocks * w).sum((1, 2), keepdims=True) / total
    spread = np.sqrt((((blocks - centre) ** 2) * w).sum((1, 2), keepdims=True) / total)
    return (blocks - centre) / np.maximum(spread, 4.0) * 32.0 * w


def describe(judge: AgeGenderJudge, image: np.ndarray, landmarks: np.ndarray, crops: np.ndarray,
             crop_landmarks: np.ndarray, expression: np.ndarray, skin_weights: np.ndarray,
             face_weights: np.ndarray) -> Original:  # fmt: skip
    """The original faces: (N, 5, 2) landmarks in ``image`` px, their (N, S, S, 3) aligned crops,
    the landmarks in those and the (N, 5) expression the mesh measured."""
    return Original(
        judge.judge([image] * len(landmarks), landmarks),
        np.stack([lab_stats(c, skin_weights) for c in crops]),
        coarse_layout(crops, face_weights),
        accessory_probes(crops, crop_landmarks),
        np.asarray(expression, np.float64),
    )


def _expression_cost(original: Original, expression: np.ndarray, flip: float = _STATE_FLIP) -> np.ndarray:
    """(N, M, 5) strangers' expression (foreseen or measured, in :data:`EXPRESSION`'s order) →
    (N, M): how far each stranger's eyes, mouth, smile and pose are from its original's, and
    whether its eyes or mouth read as closed where the original's are open (or the other way
    round), by :data:`_STATE_BAND`."""
    cost = np.abs((expression - original.expression[:, None]) / _EXPRESSION_SCALE).sum(-1)
    for feature, threshold in (("eye openness", EYE_CLOSED), ("mouth openness", MOUTH_OPEN)):
        j = EXPRESSION.index(feature)
        side = np.where(original.expression[:, j] >= threshold, 1.0, -1.0)[:, None]  # open: +1
        cost = cost + flip * np.clip(0.5 - side * (expression[..., j] - threshold) / _STATE_BAND, 0.0, 1.0)
    return cost


def _probe_cost(original: Original, probes: np.ndarray) -> np.ndarray:
    """(N, M, P) candidates' accessory probes → (N, M)."""
    gap = probes - original.probes[:, None]
    # darker than the original where accessories show counts double: that is glasses or a beard
    return (np.abs(gap) + np.maximum(-gap, 0)).sum(-1) / _PROBE_SCALE


def shortlist(original: Original, foreseen: np.ndarray, keep: int) -> np.ndarray:
    """(N, M, len(LOOKS)) foreseen looks of M candidates per face → (N, keep) the candidates
    worth rendering, best first."""
    cost = _expression_cost(original, foreseen[..., _FORESEEN_EXPRESSION])
    cost = cost + np.linalg.norm(foreseen[..., _FORESEEN_SKIN] - original.skin[:, None, :3], axis=-1) / _SKIN_SCALE
    cost = cost + _FORESEEN_GENDER * _gender_cost(original.judged, foreseen[..., LOOKS.index("male")])
    cost = cost + _probe_cost(original, foreseen[..., _FORESEEN_PROBES])
    return np.argsort(cost, axis=1, kind="stable")[:, :keep]


def _gender_cost(original: AgeGender, male: np.ndarray) -> np.ndarray:
    """(N,) originals, (N, M) candidates' P(male) → (N, M): a sure original wants a sure stranger
    of its gender; an unsure one anything not sure of the other."""
    sure = (original.male >= _SURE) | (original.male <= 1 - _SURE)
    target = np.where(sure, np.where(original.male >= 0.5, 1.0, 0.0), original.male)
    return np.abs(male - target[:, None]) * np.where(sure, _GENDER_WEIGHT, _GENDER_WEIGHT / 2)[:, None]


def choose(
    judge: AgeGenderJudge,
    mesh: FaceMesh,
    original: Original,
    rendered: np.ndarray,
    previews: np.ndarray,
    landmarks: np.ndarray,
    skin_weights: np.ndarray,
    face_weights: np.ndarray,
    foreseen: np.ndarray | None = None,
) -> tuple[np.ndarray, list[MeshResult]]:
    """The best candidate of each face, (N,) int, and the mesh of its render (fitted at
    ``landmarks``, as the compositor fits it).

    rendered: (N, K, S, S, 3) uint8 candidate renders; previews: the same blended into the
    original crops as the compositor will (what gender, age and layout are judged on);
    landmarks: (N, 5, 2) in crop pixels; foreseen: (N, K, len(LOOKS)) their foreseen looks, if
    the codec foresees: they rank the candidates until the finalists' own expression is measured."""
    n, k = rendered.shape[:2]
    shape = rendered.shape[2:]
    skin = np.stack([lab_stats(c, skin_weights)[:3] for c in rendered.reshape(n * k, *shape)]).reshape(n, k, 3)
    # a render far darker or lighter than the skin it must match turns waxy or grows glowing eyes
    cost = np.linalg.norm(skin - original.skin[:, None, :3], axis=-1) / _SKIN_SCALE
    layout = coarse_layout(previews.reshape(n * k, *shape), face_weights).reshape(n, k, _GRID, _GRID)
    cost = cost + np.sqrt(((layout - original.layout[:, None]) ** 2).mean((2, 3))) / _LAYOUT_SCALE
    probes = accessory_probes(previews.reshape(n * k, *shape), np.repeat(landmarks, k, 0)).reshape(n, k, -1)
    cost = cost + _probe_cost(original, probes)
    flat, points = list(previews.reshape(n * k, *shape)), np.repeat(landmarks, k, 0)
    centre = points.mean(1, keepdims=True)
    framings = [points] + [centre + (points - centre) * scale for scale in _GENDER_FRAMINGS]
    male = judge.male(flat * len(framings), np.concatenate(framings)).reshape(len(framings), n, k).mean(0)
    cost = cost + _gender_cost(original.judged, male)
    ranking = cost
    if foreseen is not None:
        ranking = cost + _expression_cost(original, foreseen[..., _FORESEEN_EXPRESSION])
    rows = np.arange(n)[:, None]
    # the best ranked few are aged (the latent does not foresee age), then ranked with their age gap
    aged = np.argsort(ranking, axis=1, kind="stable")[:, :_AGED]
    ages = judge.ages(list(previews[rows, aged].reshape(-1, *shape)), np.repeat(landmarks, aged.shape[1], 0))
    age_cost = np.abs(ages.reshape(n, -1) - original.judged.age[:, None]) / _AGE_SCALE
    by_age = np.argsort(ranking[rows, aged] + age_cost, axis=1, kind="stable")[:, :_FINAL_POOL]
    finalists, age_cost = aged[rows, by_age], age_cost[rows, by_age]
    pool = finalists.shape[1]
    fitted = mesh.fit_all(list(previews[rows, finalists].reshape(-1, *shape)), np.repeat(landmarks, pool, 0))
    measured = np.stack([m.expression() for m in fitted]).reshape(n, pool, -1)
    cost_final = cost[rows, finalists] + _expression_cost(original, measured, _MEASURED_FLIP) + age_cost
    best = finalists[np.arange(n), np.argmin(cost_final, axis=1)]
    return best, mesh.fit_all(list(rendered[np.arange(n), best]), landmarks)
