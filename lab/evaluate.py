"""``python -m lab eval``: privacy, utility, exactness and key algebra on real photos.

Every photo (``skimage.data.astronaut()`` plus the .jpg/.png files of a folder) is
anonymized :data:`KEYS_PER_FACE` (or ``--keys``) times under fresh content keys, always as PNG so the
numbers measure the pipeline, not JPEG. Each (face, key) pair is one sample for
re-identification, detection and landmark displacement; the same versions give the
diversity of a face across keys. The first version is ``exact`` fidelity (its recovery
must give back the decoded photo bit for bit), the second ``latent`` (recovery quality as
PSNR/SSIM of the face boxes). Identity judges are independent of the pipeline's codec:
SFace and dlib (:mod:`lab.facemetrics`).

Two references put the re-identification rate in context: the same photo with the masked
face blanked (what identity the composite leaves outside its mask, whatever the codec),
and an anonymized face judged against a different photo of the same person (no shared
hair, background or lighting).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cipher_worker import cipher, envelope, keys, looks
from cipher_worker.agegender import AgeGenderJudge
from cipher_worker.align import Alignment, crop
from cipher_worker.ciphers import Cipher, FaceSecret
from cipher_worker.codecs import CodecConfig
from cipher_worker.codecs.base import Latents
from cipher_worker.composite import composite_face
from cipher_worker.detect import Face, FaceDetector
from cipher_worker.facemask import RasterMask
from cipher_worker.imageio import decode_image, encode_image, read_file
from cipher_worker.mesh import FaceMesh, MeshResult, distinct
from cipher_worker.pipeline import AnonymizedPhoto, Pipeline
from lab.contact_sheet import SHEET_NAME, contact_rows, contact_sheet
from lab.eval_report import TARGETS, markdown_report, meets, summary_text
from lab.facemetrics import (
    DLIB_SAME_PERSON,
    SFACE_SAME_PERSON,
    DlibRecogniser,
    SFaceRecogniser,
    face_at,
    landmark_displacement,
    match_faces,
    placed,
)
from lab.report import save_report

DEFAULT_IMAGES = Path(__file__).parents[1] / "tests" / "data"
KEYS_PER_FACE = 5
MATCH_IOU = 0.3
# Different photos of one person among the bundled test photos (tests/data/CREDITS.md): an attacker
# holding one can try to re-identify the other's anonymized face without any shared context.
SAME_PERSON = (("person_a_1.jpg", "person_a_2.jpg"), ("person_b_1.jpg", "person_b_2.jpg"))

_started = time.perf_counter()


def _log(message: str) -> None:
    print(f"[eval {time.perf_counter() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EvalPhoto:
    """An input photo: ``data`` as uploaded, ``pixels`` (H, W, 3) uint8 as Veil decodes it."""

    name: str
    data: bytes
    pixels: np.ndarray


@dataclass(frozen=True)
class Version:
    """One anonymization of a photo: the result, its decoded pixels and the detections on them."""

    result: AnonymizedPhoto
    fidelity: envelope.Fidelity
    pixels: np.ndarray
    faces: list[Face]


@dataclass(frozen=True)
class Judges:
    """The evaluation's own models, loaded once."""

    detector: FaceDetector
    sface: SFaceRecogniser
    dlib: DlibRecogniser
    mesh: FaceMesh
    agegender: AgeGenderJudge


def load_photos(images_dir: Path | None) -> list[EvalPhoto]:
    """The astronaut plus every .jpg/.jpeg/.png in ``images_dir`` (default: the bundled test photos)."""
    from skimage import data as skdata

    astronaut = np.ascontiguousarray(skdata.astronaut()[..., :3])
    photos = [EvalPhoto("astronaut", encode_image(astronaut, "PNG"), astronaut)]
    folder = images_dir if images_dir is not None else DEFAULT_IMAGES
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                data = read_file(path)
                photos.append(EvalPhoto(path.name, data, decode_image(data).pixels))
    return photos


@contextlib.contextmanager
def seeded_keys(seed: int | None, *label: object) -> Iterator[None]:
    """With a ``seed``, the content key and nonce of the anonymization run inside are derived from
    (seed, label) instead of drawn at random, so two variants of the pipeline can be compared on
    the same strangers' pads; without one, nothing changes."""
    if seed is None:
        yield
        return

    def derived(what: str, size: int) -> bytes:
        return hashlib.sha256(repr((seed, *label, what)).encode()).digest()[:size]

    saved = cipher.random_content_key, cipher.random_nonce
    cipher.random_content_key = lambda: derived("content key", cipher.CONTENT_KEY_BYTES)
    cipher.random_nonce = lambda: derived("nonce", cipher.NONCE_BYTES)
    try:
        yield
    finally:
        cipher.random_content_key, cipher.random_nonce = saved


def anonymize_versions(
    pipeline: Pipeline, photo: EvalPhoto, public: bytes, judges: Judges, keys_per_face: int, seed: int | None = None
) -> list[Version]:
    """``keys_per_face`` anonymizations (each a fresh content key, or one derived from ``seed``,
    the photo's name and the key's number): the first ``exact``, the rest ``latent``."""
    versions = []
    for k in range(keys_per_face):
        fidelity: envelope.Fidelity = "exact" if k == 0 else "latent"
        with seeded_keys(seed, photo.name, k):
            result = pipeline.anonymize(photo.data, public, fidelity=fidelity, fmt="PNG")
        pixels = decode_image(result.image).pixels
        versions.append(Version(result, fidelity, pixels, judges.detector.detect(pixels)))
    return versions


def _anonymized_face(original: Face, version: Version, match: int | None) -> Face:
    # An undetected anonymized face is still judged where the original was: an attacker knows where to look.
    return version.faces[match] if match is not None else face_at(original.landmarks, original.box)


def privacy_and_utility(
    photo: EvalPhoto, faces: list[Face], meshes: list[MeshResult], versions: list[Version], judges: Judges
) -> dict[str, Any]:
    """Per (face, version) samples: SFace cosine, dlib distance, detected, landmark displacement;
    per face: mean pairwise SFace cosine between its versions. ``meshes``: each original face's."""
    sface_cos: list[float] = []
    dlib_dist: list[float] = []
    detected: list[bool] = []
    displacement: list[float] = []
    embeddings: list[list[np.ndarray]] = [[] for _ in faces]
    faces = [placed(f, m) for f, m in zip(faces, meshes, strict=True)]  # the landmarks the pipeline aligns on
    originals = [judges.sface.embed(photo.pixels, f) for f in faces]
    looks_samples: dict[str, list[float]] = {k: [] for k in ("gender_kept", "age_gap", "eyes", "mouth", "skin")}
    off_face = [0, 0]
    # where the mesh finds no face (a profile) its points are not on one: the detector's box says where it is
    outlines = [
        looks.face_outline(m) if m.found else looks.box_outline(f.box) for f, m in zip(faces, meshes, strict=True)
    ]
    samples: list[dict[str, Any]] = []
    for key, version in enumerate(versions):
        off, changed = looks.off_face_share(photo.pixels, version.pixels, outlines)
        off_face[0] += off
        off_face[1] += changed
        for i, (face, match) in enumerate(zip(faces, match_faces(faces, version.faces, MATCH_IOU), strict=True)):
            anon = _anonymized_face(face, version, match)
            anon_mesh = judges.mesh.fit(version.pixels, anon.landmarks)
            anon = placed(anon, anon_mesh)
            sample: dict[str, Any] = {"face": i, "key": key, "box": [round(v) for v in face.box]}
            sample.update(_looks(photo.pixels, face, meshes[i], version.pixels, anon, anon_mesh, judges, looks_samples))
            feature = judges.sface.embed(version.pixels, anon)
            embeddings[i].append(feature)
            sface_cos.append(float(originals[i] @ feature))
            distance = judges.dlib.distance(photo.pixels, face, version.pixels, anon)
            if distance is not None:
                dlib_dist.append(distance)
            detected.append(match is not None)
            if match is not None:
                displacement.append(landmark_displacement(face.landmarks, anon.landmarks))
            sample.update(
                sface=sface_cos[-1],
                dlib=None if distance is None else float(distance),
                detected=match is not None,
                displacement=displacement[-1] if match is not None else None,
            )
            samples.append(sample)
    diversity = [float(a @ b) for e in embeddings for a, b in itertools.combinations(e, 2)]
    # the worker's time per face: its cipher stage (every candidate stranger's encryption) and in all
    per_face = [(v.result.timings, len(faces)) for v in versions if faces]
    cipher_ms = [1000 * t.get("cipher", 0.0) / n for t, n in per_face]
    total_ms = [1000 * sum(t.values()) / n for t, n in per_face]
    main = max(range(len(faces)), key=lambda i: faces[i].box[2] * faces[i].box[3], default=None)
    return {
        # the largest face's SFace features: original (128,) and one (128,) per version
        "main_features": None if main is None else (originals[main], embeddings[main]),
        "sface_cosines": sface_cos,
        "dlib_distances": dlib_dist,
        "detected": detected,
        "displacements": displacement,
        "diversity_cosines": diversity,
        "cipher_ms_per_face": cipher_ms,
        "anonymize_ms_per_face": total_ms,
        "off_face": off_face,
        "samples": samples,
        **{f"looks_{k}": v for k, v in looks_samples.items()},
    }


def _looks(
    original: np.ndarray,
    face: Face,
    mesh: Any,
    anonymized: np.ndarray,
    anon: Face,
    anon_mesh: Any,
    judges: Judges,
    out: dict[str, list[float]],
) -> dict[str, Any]:
    """One (face, version) sample of what a viewer sees: gender kept (when the judge is sure of the
    original), age gap, eyes and mouth state flipped, skin tone ΔE; appended to ``out`` and returned."""
    judged = judges.agegender.judge([original, anonymized], np.stack([face.landmarks, anon.landmarks]))
    male = judged.male
    sample: dict[str, Any] = {"male": [float(m) for m in male], "age": [float(a) for a in judged.age]}
    if max(male[0], 1 - male[0]) >= looks.GENDER_SURE:
        out["gender_kept"].append(float((male[1] >= 0.5) == (male[0] >= 0.5)))
    out["age_gap"].append(float(abs(judged.age[1] - judged.age[0])))
    before, after = looks.face_state(mesh), looks.face_state(anon_mesh)
    out["eyes"].append(float(before.eyes_closed != after.eyes_closed))
    out["mouth"].append(float(before.mouth_open != after.mouth_open))
    # the same region of both photos: where the original face was
    out["skin"].append(looks.delta_e(looks.skin_lab(original, mesh), looks.skin_lab(anonymized, mesh)))
    sample.update(
        eyes_flipped=bool(out["eyes"][-1]), mouth_flipped=bool(out["mouth"][-1]), skin_delta_e=out["skin"][-1]
    )
    return sample


def blanked_cosines(
    pipeline: Pipeline, photo: EvalPhoto, faces: list[Face], version: Version, judges: Judges
) -> list[float]:
    """SFace cosine of each original face to the photo with every face's mask (as ``version`` drew
    it) filled with the face's mean colour: the identity left outside the mask, a floor no cipher
    or codec can go below."""
    blank = photo.pixels.copy()
    size = pipeline.codec.crop_size
    for record in envelope.Envelope.from_bytes(version.result.envelope).faces:
        assert isinstance(record.mask, np.ndarray)
        x0, y0, x1, y1 = record.box
        fill = np.empty((size, size, 3), np.uint8)
        fill[:] = photo.pixels[y0:y1, x0:x1].reshape(-1, 3).mean(0).round().astype(np.uint8)
        mask, alignment = RasterMask(record.mask, size), Alignment(record.transform, size)
        composite_face(blank, fill, alignment, mask, record.box, np.random.default_rng(0))
    return [judges.sface.similarity(photo.pixels, f, blank, f) for f in faces]


def cross_photo(names: list[str], all_pu: list[dict[str, Any]]) -> dict[str, list[float]]:
    """SFace cosines between a photo of a person and the anonymized versions of another photo of them
    (:data:`SAME_PERSON`, both directions), with the originals' cosine as the baseline."""
    features = {n: pu["main_features"] for n, pu in zip(names, all_pu, strict=True) if pu["main_features"]}
    out: dict[str, list[float]] = {"anonymized": [], "original": []}
    for a, b in SAME_PERSON:
        if a in features and b in features:
            out["original"].append(float(features[a][0] @ features[b][0]))
            for known, target in ((a, b), (b, a)):
                out["anonymized"] += [float(features[known][0] @ v) for v in features[target][1]]
    return out


def _box_scores(a: np.ndarray, b: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over (x0, y0, x1, y1) boxes of two (H, W, 3) uint8 images."""
    psnr, ssim = [], []
    for x0, y0, x1, y1 in boxes:
        ra, rb = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
        psnr.append(float(peak_signal_noise_ratio(ra, rb, data_range=255)))
        side = min(ra.shape[:2])
        win = min(7, side if side % 2 else side - 1)  # SSIM needs an odd window inside the box
        ssim.append(float(structural_similarity(ra, rb, channel_axis=2, data_range=255, win_size=win)))
    return float(np.mean(psnr)), float(np.mean(ssim))


def recovery(
    pipeline: Pipeline, photo: EvalPhoto, faces: list[Face], versions: list[Version], private: bytes, judges: Judges
) -> dict[str, Any]:
    """Exact recovery of version 0 (bitwise) and latent recovery of version 1 (PSNR/SSIM of face boxes)."""
    exact = pipeline.recover(versions[0].result.image, versions[0].result.envelope, album_private=private).pixels
    diff = int(np.abs(exact.astype(np.int16) - photo.pixels.astype(np.int16)).max())
    out: dict[str, Any] = {"exact": bool(np.array_equal(exact, photo.pixels)), "exact_max_abs_diff": diff}
    latent_version = versions[1]
    boxes = [r.box for r in envelope.Envelope.from_bytes(latent_version.result.envelope).faces]
    if boxes:
        latent = pipeline.recover(latent_version.result.image, latent_version.result.envelope, album_private=private)
        out["latent_psnr"], out["latent_ssim"] = _box_scores(photo.pixels, latent.pixels, boxes)
        out["anonymized_psnr"], out["anonymized_ssim"] = _box_scores(photo.pixels, latent_version.pixels, boxes)
        # is the person back? the same place in the recovered photo, judged by SFace
        out["latent_sface_cosines"] = [judges.sface.similarity(photo.pixels, f, latent.pixels, f) for f in faces]
    return out


def _render_face(pixels: np.ndarray, template: np.ndarray) -> Face:
    """A codec crop's face: landmarks at the codec template, box = the whole crop."""
    side = float(pixels.shape[0])
    return face_at(template, (0.0, 0.0, side, side))


def _open_identities(env: envelope.Envelope, private: bytes, face_cipher: Cipher) -> np.ndarray:
    """The envelope's faces' plain identities, (N, d) float64, opened with the album key."""
    content_key = keys.open_content_key(env.sealed_content_key, private)
    faces = [FaceSecret(content_key, env.nonce, i, r.candidate) for i, r in enumerate(env.faces)]
    return face_cipher.decrypt_faces(np.stack([r.identity for r in env.faces]), faces)


def _random_secrets(count: int) -> list[FaceSecret]:
    """``count`` face secrets under a fresh random content key, as a stranger anonymizing again would get."""
    content_key, nonce = cipher.random_content_key(), cipher.random_nonce()
    return [FaceSecret(content_key, nonce, i) for i in range(count)]


def key_algebra(
    pipeline: Pipeline, photo: EvalPhoto, faces: list[Face], version: Version, private: bytes, judges: Judges
) -> dict[str, Any]:
    """Right-key recovery, sequential anonymization (under keys p1 then p2), any-order and combined
    decryption on the real identities of ``version``'s faces (decrypted from its envelope),
    through the pipeline's cipher: exact, off by a measured error (latent, and SFace cosine of
    the renders), or absent (None) where its key algebra has no combined keys; and a wrong key,
    judged in the photo as a person would see it (the decoy recovery: the stored identity
    decrypted with a wrong key)."""
    env = envelope.Envelope.from_bytes(version.result.envelope)
    if not env.faces:
        return {}
    if pipeline.cipher.space == "pixels":
        return {
            **pixel_key_algebra(pipeline, photo, env, private, judges),
            **wrong_key(photo, faces, version, pipeline, judges),
        }
    codec, c = pipeline.codec, pipeline.cipher
    x = _open_identities(env, private, c)
    attributes = np.stack([r.attributes for r in env.faces])
    s1, s2 = _random_secrets(len(x)), _random_secrets(len(x))
    e12 = c.encrypt_faces(c.latent(c.encrypt_faces(x, s1)), s2)
    decrypted: dict[str, np.ndarray | None] = {
        "p1_then_p2": c.decrypt_faces(c.store(c.decrypt_faces(e12, s1)), s2),
        "p2_then_p1": c.decrypt_faces(c.store(c.decrypt_faces(e12, s2)), s1),
        "combined": None,
    }
    if c.algebra != "none":  # combined decryption passwords undo both layers at once
        undo = c.combine(c.passwords(s1, role="decrypt"), c.passwords(s2, role="decrypt"))
        decrypted["combined"] = c.decrypt(e12, undo)

    def render(identity: np.ndarray) -> np.ndarray:
        return codec.render(Latents(identity, attributes), typical=False)

    def render_cosines(a: np.ndarray, b: np.ndarray) -> list[float]:
        return _crop_cosines(judges, codec.template, a, b)  # every render shares the crop's template

    reference = render(x)  # the codec's reconstruction of the real face
    out: dict[str, Any] = {"faces": len(x)}
    # right-key recovery: the envelope's identity decrypted, against the codec's own encoding of the crop
    crops = np.stack([crop(photo.pixels, Alignment(r.transform, codec.crop_size)) for r in env.faces])
    direct = codec.encode(crops, np.zeros((len(crops), 5, 2))).identity
    out["right_key_max_error"] = float(np.abs(x - direct).max())
    out["right_key_rms_error"] = float(np.sqrt(((x - direct) ** 2).mean()))
    out["right_key_sface_cosines"] = render_cosines(reference, render(direct))
    for name, d in decrypted.items():
        out[f"{name}_bit_exact"] = None if d is None else bool(np.array_equal(c.store(d), c.store(x)))
        out[f"{name}_max_error"] = None if d is None else float(np.abs(d - x).max())
        shown = None if d is None else render(d)
        out[f"{name}_pixel_identical"] = None if shown is None else bool(np.array_equal(shown, reference))
        out[f"{name}_sface_cosines"] = None if shown is None else render_cosines(shown, reference)
    return {**out, **wrong_key(photo, faces, version, pipeline, judges)}


def _crop_cosines(judges: Judges, template: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[float]:
    """SFace cosines between two stacks of (N, S, S, 3) aligned crops (faces at the codec's template)."""
    face = _render_face(a[0], template)
    return [judges.sface.similarity(ra, face, rb, face) for ra, rb in zip(a, b, strict=True)]


def _pixel_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) mean |a − b| per face of two (N, S, S, 3) uint8 stacks, in 0–255 units."""
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean((1, 2, 3))


def pixel_key_algebra(
    pipeline: Pipeline, photo: EvalPhoto, env: envelope.Envelope, private: bytes, judges: Judges
) -> dict[str, Any]:
    """:func:`key_algebra` for a pixel-space cipher (FIT), on the aligned crops themselves: the
    envelope's anonymized crop decrypted with the right key against the original crop (mean
    pixel error per face, 0–255 units; SFace cosine of the crops), and two layers of
    anonymization peeled in order and in the other order (this cipher has no combined keys)."""
    codec, c = pipeline.codec, pipeline.cipher
    size = codec.crop_size
    content_key = keys.open_content_key(env.sealed_content_key, private)
    opened = [FaceSecret(content_key, env.nonce, i, r.candidate) for i, r in enumerate(env.faces)]
    stored = np.stack([r.identity for r in env.faces]).reshape(-1, size, size, 3).astype(np.uint8, copy=False)
    originals = np.stack([crop(photo.pixels, Alignment(r.transform, size)) for r in env.faces])
    back = c.decrypt_crop_faces(stored, opened)
    error = _pixel_error(back, originals)
    out: dict[str, Any] = {"faces": len(stored), "space": "pixels"}
    out["right_key_max_error"] = float(error.max())
    out["right_key_rms_error"] = float(np.sqrt(((back.astype(np.float64) - originals) ** 2).mean()))
    out["right_key_sface_cosines"] = _crop_cosines(judges, codec.template, originals, back)
    s1, s2 = _random_secrets(len(stored)), _random_secrets(len(stored))
    twice = c.encrypt_crop_faces(c.encrypt_crop_faces(originals, s1), s2)
    peeled = {
        "p1_then_p2": c.decrypt_crop_faces(c.decrypt_crop_faces(twice, s1), s2),
        "p2_then_p1": c.decrypt_crop_faces(c.decrypt_crop_faces(twice, s2), s1),
    }
    for name, d in peeled.items():
        out[f"{name}_bit_exact"] = out[f"{name}_pixel_identical"] = bool(np.array_equal(d, originals))
        out[f"{name}_max_error"] = float(_pixel_error(d, originals).max())
        out[f"{name}_sface_cosines"] = _crop_cosines(judges, codec.template, d, originals)
    for what in ("bit_exact", "pixel_identical", "max_error", "sface_cosines"):
        out[f"combined_{what}"] = None
    return out


def wrong_key(
    photo: EvalPhoto, faces: list[Face], version: Version, pipeline: Pipeline, judges: Judges
) -> dict[str, Any]:
    """The decoy recovery (the stored identity decrypted with a wrong key), judged in the photo
    as a person would see it: SFace cosines to the original and to the anonymized face."""
    out: dict[str, Any] = {}
    wrong = pipeline.recover(version.result.image, version.result.envelope, decoy_password=secrets.token_hex(8)).pixels
    wrong_faces = judges.detector.detect(wrong)
    sface = judges.sface
    out["wrong_vs_original_cosines"], out["wrong_vs_anonymized_cosines"] = [], []
    matches = zip(faces, match_faces(faces, wrong_faces), match_faces(faces, version.faces), strict=True)
    for face, j, k in matches:
        seen = face_at(face.landmarks, face.box) if j is None else wrong_faces[j]
        out["wrong_vs_original_cosines"].append(sface.similarity(photo.pixels, face, wrong, seen))
        anonymized = _anonymized_face(face, version, k)
        out["wrong_vs_anonymized_cosines"].append(sface.similarity(version.pixels, anonymized, wrong, seen))
    return out


def _rate(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise_photo(
    name: str, size: tuple[int, int], faces: int, pu: dict[str, Any], rec: dict[str, Any]
) -> dict[str, Any]:
    """One photo's row: rates over its (face, key) samples and its recovery numbers."""
    return {
        "photo": name,
        "size": list(size),
        "faces": faces,
        "samples": len(pu["detected"]),
        "reidentification_rate_sface": _rate([c >= SFACE_SAME_PERSON for c in pu["sface_cosines"]]),
        "reidentification_rate_dlib": _rate([d < DLIB_SAME_PERSON for d in pu["dlib_distances"]]),
        "sface_cosine_max": max(pu["sface_cosines"], default=None),
        "detection_rate": _rate(pu["detected"]),
        "landmark_displacement": _mean(pu["displacements"]),
        "diversity": _mean(pu["diversity_cosines"]),
        **_looks_summary([pu]),
        **{k: v for k, v in rec.items() if not k.endswith("_cosines")},
        "latent_sface_cosine": _mean(rec.get("latent_sface_cosines", [])),
    }


def _pooled(all_pu: list[dict[str, Any]], key: str) -> list[Any]:
    return [v for pu in all_pu for v in pu[key]]


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _looks_summary(all_pu: list[dict[str, Any]]) -> dict[str, Any]:
    """What a viewer sees, pooled over (face, key) samples."""
    off = sum(pu["off_face"][0] for pu in all_pu)
    changed = sum(pu["off_face"][1] for pu in all_pu)
    return {
        "gender_samples": len(_pooled(all_pu, "looks_gender_kept")),
        "gender_kept_rate": _mean(_pooled(all_pu, "looks_gender_kept")),
        "age_gap_median": _median(_pooled(all_pu, "looks_age_gap")),
        "eyes_flipped_rate": _mean(_pooled(all_pu, "looks_eyes")),
        "mouth_flipped_rate": _mean(_pooled(all_pu, "looks_mouth")),
        "skin_delta_e_median": _median(_pooled(all_pu, "looks_skin")),
        "off_face_rate": off / changed if changed else None,
    }


def summarise(
    photos: list[dict[str, Any]], all_pu: list[dict[str, Any]], algebra: list[dict[str, Any]], dlib_ok: bool
) -> dict[str, Any]:
    """Overall numbers, pooled over every (face, key) sample of every photo."""
    sface, dlib = _pooled(all_pu, "sface_cosines"), _pooled(all_pu, "dlib_distances")
    blanked = _pooled(all_pu, "blanked_cosines")
    with_faces = [p for p in photos if p["faces"]]
    result: dict[str, Any] = {
        "photos": len(photos),
        "faces": sum(p["faces"] for p in photos),
        "samples": len(sface),
        "reidentification_rate_sface": _rate([c >= SFACE_SAME_PERSON for c in sface]),
        "reidentification_rate_dlib": _rate([d < DLIB_SAME_PERSON for d in dlib]) if dlib_ok else None,
        "sface_cosine_mean": _mean(sface),
        "sface_cosine_max": max(sface, default=None),
        "blanked_reidentification_rate_sface": _rate([c >= SFACE_SAME_PERSON for c in blanked]),
        "blanked_sface_cosine_mean": _mean(blanked),
        "dlib_distance_mean": _mean(dlib) if dlib_ok else None,
        "dlib_distance_min": min(dlib, default=None) if dlib_ok else None,
        "detection_rate": _rate(_pooled(all_pu, "detected")),
        "landmark_displacement": _mean(_pooled(all_pu, "displacements")),
        "diversity": _mean(_pooled(all_pu, "diversity_cosines")),
        "diversity_max": max(_pooled(all_pu, "diversity_cosines"), default=None),
        "cipher_ms_per_face": _mean(_pooled(all_pu, "cipher_ms_per_face")),
        "anonymize_ms_per_face": _mean(_pooled(all_pu, "anonymize_ms_per_face")),
        **_looks_summary(all_pu),
        "exact_recovery": all(p["exact"] for p in photos),
        "exact_max_abs_diff": max(p["exact_max_abs_diff"] for p in photos),
    }
    for key in ("latent_psnr", "latent_ssim", "anonymized_psnr", "anonymized_ssim", "latent_sface_cosine"):
        result[key] = _mean([p[key] for p in with_faces if p.get(key) is not None])
    result["key_algebra"] = summarise_algebra(algebra)
    return result


def summarise_algebra(per_photo: list[dict[str, Any]]) -> dict[str, Any]:
    """Each key-algebra check over all faces: pass iff it held for every face."""
    runs = [a for a in per_photo if a]
    out: dict[str, Any] = {"faces": sum(a["faces"] for a in runs)}
    out["space"] = runs[0].get("space", "latent") if runs else "latent"  # pixels: errors in 0–255 units
    for name in ("p1_then_p2", "p2_then_p1", "combined"):
        for what in ("bit_exact", "pixel_identical"):
            held = [a[f"{name}_{what}"] for a in runs]
            out[f"{name}_{what}"] = all(held) if runs and None not in held else None  # None: no such keys
        errors = [a[f"{name}_max_error"] for a in runs]
        out[f"{name}_max_error"] = max(errors) if runs and None not in errors else None
        cosines = [a[f"{name}_sface_cosines"] for a in runs]
        out[f"{name}_sface_cosine_min"] = min(v for c in cosines for v in c) if runs and None not in cosines else None
    out["right_key_max_error"] = max((a["right_key_max_error"] for a in runs), default=None)
    errors = [a["right_key_rms_error"] for a in runs]
    out["right_key_rms_error"] = _mean(errors)
    right = [v for a in runs for v in a["right_key_sface_cosines"]]
    out["right_key_sface_cosine_min"], out["right_key_sface_cosine_mean"] = min(right, default=None), _mean(right)
    for key in ("wrong_vs_original_cosines", "wrong_vs_anonymized_cosines"):
        values = [c for a in runs for c in a[key]]
        out[key.replace("_cosines", "_max_cosine")] = max(values, default=None)
        out[key.replace("_cosines", "_mean_cosine")] = _mean(values)
    wrong = [out["wrong_vs_original_max_cosine"], out["wrong_vs_anonymized_max_cosine"]]
    out["wrong_key_unrelated"] = all(c < SFACE_SAME_PERSON for c in wrong) if runs else None
    return out


def evaluate_photo(
    pipeline: Pipeline,
    photo: EvalPhoto,
    album: tuple[bytes, bytes],
    judges: Judges,
    keys_per_face: int,
    seed: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One photo → (its summary row, its raw samples incl. its contact-sheet rows, its key-algebra results)."""
    private, public = album
    faces = judges.detector.detect(photo.pixels)
    meshes = judges.mesh.fit_all([photo.pixels] * len(faces), np.stack([f.landmarks for f in faces])) if faces else []
    seen = distinct(meshes)  # one face the detector boxed twice is one face, as the pipeline counts it
    faces, meshes = [faces[i] for i in seen], [meshes[i] for i in seen]
    _log(f"{photo.name}: {len(faces)} face(s); anonymizing under {keys_per_face} keys")
    versions = anonymize_versions(pipeline, photo, public, judges, keys_per_face, seed)
    pu = privacy_and_utility(photo, faces, meshes, versions, judges)
    pu["blanked_cosines"] = blanked_cosines(pipeline, photo, faces, versions[0], judges)
    rec = recovery(pipeline, photo, faces, versions, private, judges)
    algebra = key_algebra(pipeline, photo, faces, versions[0], private, judges)
    pu["sheet_rows"] = contact_rows(photo.pixels, [f.box for f in faces], [v.pixels for v in versions])
    size = (photo.pixels.shape[1], photo.pixels.shape[0])
    return summarise_photo(photo.name, size, len(faces), pu, rec), pu, algebra


def run_evaluation(
    images_dir: Path | None,
    out: Path | None,
    codec: CodecConfig | None = None,
    keys_per_face: int = KEYS_PER_FACE,
    cipher_name: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Evaluate the pipeline (the default codec, and the torus cipher unless ``cipher_name`` says
    otherwise) on the astronaut and ``images_dir``'s photos, each face under ``keys_per_face``
    content keys (at least 2: one exact, the rest latent; derived from ``seed`` when given, so
    variants can be compared on the same keys); optionally write a Markdown report and the
    contact sheet beside ``out``. Returns every number plus a ``summary`` and every (photo, face,
    key) sample in ``sample_records``."""
    if keys_per_face < 2:
        raise ValueError("the evaluation needs at least 2 keys per face (one exact, one latent)")
    from cipher_worker.api import get_pipeline

    global _started
    _started = time.perf_counter()
    _log("loading the pipeline and the evaluation models")
    pipeline = get_pipeline(codec, cipher_name)
    judges = Judges(FaceDetector(), SFaceRecogniser(), DlibRecogniser(), FaceMesh(), AgeGenderJudge())
    if not judges.dlib.available:
        _log(f"dlib second opinion unavailable: {judges.dlib.reason}")
    album = keys.generate_album_keypair()
    rows, samples, algebra = [], [], []
    for photo in load_photos(images_dir):
        row, pu, alg = evaluate_photo(pipeline, photo, album, judges, keys_per_face, seed)
        rows.append(row)
        samples.append(pu)
        algebra.append(alg)
    result = summarise(rows, samples, algebra, judges.dlib.available)
    result["keys_per_face"] = keys_per_face
    result["seed"] = seed
    result["sample_records"] = [
        {"photo": r["photo"], **x} for r, pu in zip(rows, samples, strict=True) for x in pu["samples"]
    ]
    cross = cross_photo([r["photo"] for r in rows], samples)
    result["cross_photo_samples"] = len(cross["anonymized"])
    result["cross_photo_reidentification_rate_sface"] = _rate([c >= SFACE_SAME_PERSON for c in cross["anonymized"]])
    result["cross_photo_sface_cosine_mean"] = _mean(cross["anonymized"])
    result["cross_photo_original_cosine_mean"] = _mean(cross["original"])
    result["per_photo"] = rows
    result["codec"] = f"{pipeline.codec.id} ({pipeline.codec.fingerprint.hex()[:12]})"
    result["cipher"] = f"{pipeline.cipher.id} ({pipeline.cipher.fingerprint.hex()[:12]})"
    result["dlib"] = "available" if judges.dlib.available else f"unavailable: {judges.dlib.reason}"
    result["passed"] = {k: meets(k, result[k]) for k in TARGETS}
    if out is not None:
        sheet = out.parent / SHEET_NAME
        sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.write_bytes(encode_image(contact_sheet([r for pu in samples for r in pu["sheet_rows"]]), "PNG"))
        result["contact_sheet"] = str(sheet)
        _log(f"wrote {sheet}")
    result["summary"] = summary_text(result)
    save_report(result, out, markdown_report, _log)
    return result
