"""anonymize_photo / recover_photo: the stages of the upload and unlock flows (ARCHITECTURE.md) in
order, all faces as one batch.

Anonymize: decode → detect → align → encode → encrypt identity → render → composite →
seal envelope. Recover runs decrypt → render/restore → composite from the envelope's
stored latents, never by re-encoding the anonymized pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import cipher, envelope, keys, strangers
from .agegender import AgeGenderJudge
from .align import Alignment, crop
from .align import align as align_face
from .codecs.base import Codec, Latents
from .composite import EdgeMembrane, composite_face, lab_stats, match_colours, to_rgb
from .detect import FaceDetector
from .errors import CodecMismatch
from .exact import RecoveredPhoto, Stopwatch, face_aad, open_recovery, restore_face, touched_pixels
from .facemask import (
    EllipseMask,
    crop_weights,
    face_box,
    face_mask,
    face_region,
    stored_mask,
    template_face,
    template_skin,
)
from .imageio import DecodedImage, decode_image, encode_image, output_format
from .mesh import FaceMesh, MeshResult

Progress = Callable[[str, float], None]
FEATHER_PER_EYE_GAP = 14  # the feather: this fraction of the eye distance, inside the outline
FIDELITIES = ("exact", "latent")


@dataclass(frozen=True)
class FaceReport:
    index: int
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) image region the face composite touches
    score: float


@dataclass(frozen=True)
class AnonymizedPhoto:
    image: bytes  # encoded, metadata stripped, no envelope embedded
    format: str
    envelope: bytes
    faces: list[FaceReport]
    size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Pipeline:
    """One codec and one detector, loaded once; thread-safe for concurrent photos."""

    def __init__(self, codec: Codec, detector: FaceDetector | None = None) -> None:
        self.codec = codec
        self.detector = detector or FaceDetector()
        self.mesh = FaceMesh()
        self.judge = AgeGenderJudge()
        self.skin_weights = crop_weights(template_skin(codec.template), codec.crop_size)
        self.face_weights = crop_weights(template_face(codec.template), codec.crop_size)
        self.feather = float(np.linalg.norm(codec.template[1] - codec.template[0])) / FEATHER_PER_EYE_GAP

    def anonymize(
        self,
        data: bytes,
        album_public: bytes,
        *,
        fidelity: envelope.Fidelity = "exact",
        fmt: str | None = None,
        progress: Progress | None = None,
    ) -> AnonymizedPhoto:
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}")
        progress = progress or (lambda stage, fraction: None)
        watch = Stopwatch()
        progress("decoding", 0.0)
        with watch("decode"):
            photo = decode_image(data)
        progress("detecting", 0.1)
        with watch("detect"):
            faces = self.detector.detect(photo.pixels)
        progress("anonymizing", 0.3)
        content_key, nonce = cipher.random_content_key(), cipher.random_nonce()
        original = photo.pixels
        out = original.copy()
        records: list[envelope.FaceRecord] = []
        if faces:
            with watch("measure"):
                meshes = self.mesh.fit_all([original] * len(faces), np.stack([f.landmarks for f in faces]))
                # where the mesh found the face only in a turned ROI, YuNet's points were wrong and its are right
                points = np.stack(
                    [m.landmarks5() if m.turned else f.landmarks for f, m in zip(faces, meshes, strict=True)]
                )
            with watch("align+crop"):
                alignments = [align_face(p, self.codec.template, self.codec.crop_size) for p in points]
                crops = np.stack([crop(original, a) for a in alignments])
                landmarks = np.stack([_to_crop(p, a) for p, a in zip(points, alignments, strict=True)])
            with watch("measure"):
                outlines = [_to_crop(m.face_oval(), a) for m, a in zip(meshes, alignments, strict=True)]
                expression = np.stack([m.expression() for m in meshes])
                regions = [face_region(c, o, self.skin_weights) for c, o in zip(crops, outlines, strict=True)]
            with watch("encode"):
                latents = self.codec.encode(crops, landmarks, expression)
            with watch("cipher"):
                dim = self.codec.identity_dim
                face_keys = [cipher.derive_face_keys(content_key, nonce, i, dim) for i in range(len(faces))]
            wanted = None
            if self.codec.candidates > 1:  # what the strangers must look like
                with watch("choose"):
                    wanted = strangers.describe(
                        self.judge, original, points, crops, landmarks, expression,
                        self.skin_weights, self.face_weights,
                    )  # fmt: skip
            chosen, u_enc, rendered, stranger_meshes = self._strangers(
                content_key, nonce, latents, crops, landmarks, regions, wanted, watch
            )
            size = self.codec.crop_size
            rng = np.random.default_rng(int.from_bytes(nonce[:8], "little"))
            if stranger_meshes is None:  # the chooser did not measure them
                with watch("composite"):
                    stranger_meshes = self.mesh.fit_all(list(rendered), landmarks)
            for i, (a, k) in enumerate(zip(alignments, face_keys, strict=True)):
                with watch("composite"):
                    stranger = face_region(rendered[i], stranger_meshes[i].face_oval(), self.skin_weights)
                    mask = face_mask([regions[i], stranger], size, self.feather)
                    box = face_box(mask, a, photo.size)
                    mask_weights = crop_weights(mask, size)
                    skin = lab_stats(crops[i], self.skin_weights * mask_weights)
                    edge = EdgeMembrane.around(crops[i], mask_weights)
                    blended = self._blend(rendered[i], skin, edge)
                    weights = composite_face(out, blended, a, mask, box, rng)
                pixels = None
                if fidelity == "exact":
                    with watch("seal"):
                        touched = touched_pixels(original, box, weights)
                        pixels = envelope.seal_face_pixels(k.region_key, touched, face_aad(nonce, i, box))
                records.append(
                    envelope.FaceRecord(
                        transform=a.matrix,
                        box=box,
                        mask=mask.raster,
                        attributes=latents.attributes[i],
                        identity=u_enc[i],
                        pixels=pixels,
                        candidate=int(chosen[i]),
                        skin=skin.astype(np.float32),
                    )
                )
                progress("anonymizing", 0.3 + 0.6 * (i + 1) / len(faces))
        with watch("seal"):
            unsigned = envelope.Envelope(
                version=envelope.VERSION,
                codec_id=self.codec.id,
                codec_fingerprint=self.codec.fingerprint,
                fidelity=fidelity,
                sealed_content_key=keys.seal_content_key(content_key, album_public),
                nonce=nonce,
                image_size=photo.size,
                faces=tuple(records),
                mac=b"",
            )
            sealed = envelope.seal_envelope(unsigned, content_key).to_bytes()
        progress("encoding", 0.9)
        fmt = fmt or output_format(photo.format)
        with watch("image encode"):
            image = encode_image(out, fmt, photo.icc_profile)
        reports = [FaceReport(i, r.box, f.score) for i, (r, f) in enumerate(zip(records, faces, strict=True))]
        return AnonymizedPhoto(image, fmt, sealed, reports, photo.size, watch.seconds)

    def recover(
        self,
        image: bytes,
        envelope_bytes: bytes,
        *,
        album_private: bytes | None = None,
        content_key: bytes | None = None,
        decoy_password: str | None = None,
    ) -> RecoveredPhoto:
        """Original faces back with the album private key (or the photo's already opened content
        key, as the web app sends it to workers); with ``decoy_password`` and no valid key,
        plausible wrong faces derived from that password instead of an error."""
        watch = Stopwatch()
        with watch("open"):
            env = envelope.Envelope.from_bytes(envelope_bytes)
            codec = self.codec.for_fingerprint(env.codec_fingerprint) if env.codec_id == self.codec.id else None
            if codec is None:
                raise CodecMismatch(
                    f"this photo was anonymized with codec {env.codec_id} ({env.codec_fingerprint.hex()[:12]}), "
                    f"not {self.codec.id} ({self.codec.fingerprint.hex()[:12]}) as configured here; recover it with "
                    "the codec and checkpoint files it was made with (VEIL_CODEC, VEIL_E4E_CKPT, … or --codec …)"
                )
        photo, content_key, decoy = open_recovery(
            image, env, album_private=album_private, content_key=content_key, decoy_password=decoy_password, watch=watch
        )
        pixels = self._restore(codec, photo, env, content_key, decoy, watch)
        return RecoveredPhoto(pixels, len(env.faces), decoy, watch.seconds)

    def _restore(
        self,
        codec: Codec,
        photo: DecodedImage,
        env: envelope.Envelope,
        content_key: bytes,
        decoy: bool,
        watch: Stopwatch,
    ) -> np.ndarray:
        out = photo.pixels.copy()
        if not env.faces:
            return out
        # stored pixels when we have them and the key is real; the codec's rendering otherwise
        render = [decoy or r.pixels is None for r in env.faces]
        with watch("cipher"):
            face_keys = [
                cipher.derive_face_keys(content_key, env.nonce, i, codec.identity_dim, r.candidate)
                for i, r in enumerate(env.faces)
            ]
            identity = cipher.from_torus(
                np.stack([cipher.decrypt(r.identity, k.pad) for r, k in zip(env.faces, face_keys, strict=True)])
            )
        rendered = None
        if any(render):
            with watch("render"):
                attributes = np.stack([r.attributes for r in env.faces])
                rendered = codec.render(Latents(identity, attributes), typical=decoy)
        rng = np.random.default_rng(int.from_bytes(env.nonce[8:], "little"))
        with watch("composite"):
            for i in reversed(range(len(env.faces))):  # undo in the opposite order of anonymization
                record, k = env.faces[i], face_keys[i]
                if rendered is not None and render[i]:
                    a = Alignment(record.transform, codec.crop_size)
                    mask = stored_mask(record.mask, codec.crop_size)
                    if isinstance(mask, EllipseMask):  # version 1: its colours matched to what is shown
                        old = mask
                        skin = EllipseMask(old.cx, old.cy + 0.1 * old.ry, 0.55 * old.rx, 0.5 * old.ry, old.feather)
                        skin_weights = crop_weights(skin, codec.crop_size)
                        shown = crop(out, a)
                        matched = to_rgb(match_colours(rendered[i], lab_stats(shown, skin_weights), skin_weights))
                        composite_face(out, matched, a, old, record.box, rng)
                    else:  # the original's own skin colour, stored at anonymization
                        edge = EdgeMembrane.around(crop(out, a), crop_weights(mask, codec.crop_size))
                        blended = self._blend(rendered[i], record.skin.astype(np.float64), edge)
                        composite_face(out, blended, a, mask, record.box, rng)
                else:
                    restore_face(out, env, i, k.region_key)
        return out

    def _strangers(
        self,
        content_key: bytes,
        nonce: bytes,
        latents: Latents,
        crops: np.ndarray,
        landmarks: np.ndarray,
        regions: list[np.ndarray],
        wanted: strangers.Original | None,
        watch: Stopwatch,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[MeshResult] | None]:
        """Each face's stranger among the codec's candidate pads (:mod:`cipher_worker.strangers`;
        ``wanted`` is needed when there are several): (N,) chosen pad, (N, d) its encrypted
        identity on the torus, (N, S, S, 3) its render, and its mesh if the choice measured it."""
        n, count, dim = len(crops), self.codec.candidates, self.codec.identity_dim
        with watch("cipher"):
            u = cipher.to_torus(latents.identity)
            # every face's candidates, face-major: row i·K + c is face i under candidate pad c
            u_all = np.stack(
                [
                    cipher.encrypt(u[i], cipher.derive_pad(content_key, nonce, i, dim, c))
                    for i in range(n)
                    for c in range(count)
                ]
            )
            candidates = Latents(cipher.from_torus(u_all), np.repeat(latents.attributes, count, axis=0))
        with watch("choose"):
            foreseen = self.codec.foresee(candidates) if count > self.codec.finalists else None
            if foreseen is None:  # every candidate is rendered
                shortlist = np.tile(np.arange(count), (n, 1))
            else:
                assert wanted is not None
                foreseen = foreseen.reshape(n, count, -1)
                shortlist = strangers.shortlist(wanted, foreseen, self.codec.finalists)
                foreseen = np.take_along_axis(foreseen, shortlist[..., None], axis=1)
            rows = (np.arange(n)[:, None] * count + shortlist).reshape(-1)
        with watch("render"):
            rendered = self.codec.render(Latents(candidates.identity[rows], candidates.attributes[rows]), typical=True)
        picked, meshes = np.zeros(n, int), None
        if shortlist.shape[1] > 1:
            assert wanted is not None
            with watch("choose"):
                picked, meshes = self._choose(crops, regions, rendered, wanted, landmarks, foreseen)
        chosen = shortlist[np.arange(n), picked]
        stranger = rendered[np.arange(n) * shortlist.shape[1] + picked]
        return chosen, u_all[np.arange(n) * count + chosen], stranger, meshes

    def _choose(
        self,
        crops: np.ndarray,
        regions: list[np.ndarray],
        rendered: np.ndarray,
        wanted: strangers.Original,
        landmarks: np.ndarray,
        foreseen: np.ndarray | None,
    ) -> tuple[np.ndarray, list[MeshResult]]:
        """Each face's candidate whose stranger reads most like it, (N,) int, and its render's mesh;
        ``rendered`` holds the N·K candidates face-major, ``regions`` each original face's region raster."""
        n, size = len(crops), self.codec.crop_size
        count = len(rendered) // n
        # each original face alone under its mask: where its skin is measured and every
        # candidate previewed, the edge measured once
        region_weights = [crop_weights(face_mask([r], size, self.feather), size) for r in regions]
        skins = [lab_stats(c, self.skin_weights * w) for c, w in zip(crops, region_weights, strict=True)]
        edges = [EdgeMembrane.around(c, w) for c, w in zip(crops, region_weights, strict=True)]
        weights = [w[..., None] for w in region_weights]
        previews = np.stack(
            [
                _preview(crops[f], self._blend(rendered[f * count + c], skins[f], edges[f]), weights[f])
                for f in range(n)
                for c in range(count)
            ]
        )
        shape = (n, count, *rendered.shape[1:])
        return strangers.choose(
            self.judge, self.mesh, wanted, rendered.reshape(shape), previews.reshape(shape), landmarks,
            self.skin_weights, self.face_weights, foreseen,
        )  # fmt: skip

    def _blend(self, rendered: np.ndarray, skin: np.ndarray, edge: EdgeMembrane) -> np.ndarray:
        """A rendered (S, S, 3) crop in the original's skin colour, its edge taken to the photo's."""
        return to_rgb(edge.apply(match_colours(rendered, skin, self.skin_weights)))


def _preview(photo_crop: np.ndarray, blended: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A blended (S, S, 3) crop over the photo's crop under (S, S, 1) mask weights, at crop resolution."""
    return (photo_crop * (1 - weights) + blended * weights).round().astype(np.uint8)


def _to_crop(points: np.ndarray, alignment: Alignment) -> np.ndarray:
    return points @ alignment.matrix[:, :2].T + alignment.matrix[:, 2]
