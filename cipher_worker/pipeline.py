"""anonymize_photo / recover_photo: the stages of the upload and unlock flows (ARCHITECTURE.md) in
order, all faces as one batch.

Anonymize: decode → detect → align → encode → encrypt identity → render → composite →
seal envelope. Recover runs decrypt → render/restore → composite from the envelope's
stored latents, never by re-encoding the anonymized pixels.

A pixel-space cipher (FIT: ``cipher.space == "pixels"``) takes the place of encode, encrypt
and render: it transforms each face's aligned crop under each candidate key, the chosen
stranger is composited like a rendered one, and the envelope keeps the anonymized crop
(uint8, lossless) where a latent cipher keeps the encrypted identity; latent recovery
decrypts that stored crop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import cipher, envelope, keys, strangers
from .agegender import AgeGenderJudge
from .align import Alignment, crop
from .align import align as align_face
from .ciphers import CIPHERS, Cipher, FaceSecret, TorusCipher, load_cipher
from .codecs.base import Codec, Latents
from .composite import EdgeMembrane, composite_face, lab_stats, match_colours, obscure_face, to_rgb
from .detect import FaceDetector
from .errors import CipherMismatch, CodecMismatch
from .exact import RecoveredPhoto, Stopwatch, face_aad, open_recovery, restore_face, touched_pixels
from .facemask import (
    EllipseMask,
    crop_weights,
    ellipse_polygon,
    face_box,
    face_mask,
    face_region,
    grown,
    polygon_raster,
    stored_mask,
    template_face,
    template_skin,
)
from .imageio import DecodedImage, decode_image, encode_image, output_format
from .mesh import FaceMesh, MeshResult, distinct

Progress = Callable[[str, float], None]
FEATHER_PER_EYE_GAP = 14  # the feather: this fraction of the eye distance, inside the outline
# A face the mesh cannot find (a profile, or no face at all) is blurred where the detector's points
# put it (see obscure_face): over the template's face ellipse grown by this much, which stays in
# the crop and takes in the ear and hairline a profile is told by, feathered by this × the eye distance
UNFOUND_GROWTH = 0.15
UNFOUND_FEATHER = 0.4
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
    """One codec, one cipher (the torus cipher unless told) and one detector, loaded once;
    thread-safe for concurrent photos. Recovery uses the cipher each envelope names."""

    def __init__(self, codec: Codec, detector: FaceDetector | None = None, cipher: Cipher | None = None) -> None:
        self.codec = codec
        self.cipher = cipher or TorusCipher(codec.identity_dim)
        if self.cipher.space == "latent" and self.cipher.dim != codec.identity_dim:
            raise ValueError(f"a {self.cipher.dim}-coordinate cipher for a codec of {codec.identity_dim}")
        if self.cipher.space == "pixels" and self.cipher.dim != 3 * codec.crop_size**2:
            raise ValueError(f"a cipher of {self.cipher.dim} pixel values for a codec's {codec.crop_size} px crops")
        self._ciphers: dict[tuple[str, bytes], Cipher] = {(self.cipher.id, codec.fingerprint): self.cipher}
        self._ciphers_lock = threading.Lock()
        self.detector = detector or FaceDetector()
        self.mesh = FaceMesh()
        self.judge = AgeGenderJudge()
        self.skin_weights = crop_weights(template_skin(codec.template), codec.crop_size)
        self.face_weights = crop_weights(template_face(codec.template), codec.crop_size)
        self.eye_gap = float(np.linalg.norm(codec.template[1] - codec.template[0]))
        self.feather = self.eye_gap / FEATHER_PER_EYE_GAP
        # a face the mesh cannot find is blurred, not replaced, where the detector says it is
        unfound = grown(ellipse_polygon(template_face(codec.template)), UNFOUND_GROWTH)
        self.unfound_region = polygon_raster(unfound, codec.crop_size)

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
                seen_once = distinct(meshes)
                faces, meshes = [faces[i] for i in seen_once], [meshes[i] for i in seen_once]
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
                cores = [_to_crop(m.features(), a) for m, a in zip(meshes, alignments, strict=True)]
                regions = [
                    face_region(c, o, k, self.skin_weights) if m.found else self.unfound_region
                    for c, o, k, m in zip(crops, outlines, cores, meshes, strict=True)
                ]
            with watch("encode"):
                latents = (
                    self.codec.encode(crops, landmarks, expression)
                    if self.cipher.space == "latent"
                    else None  # a pixel cipher transforms the crops themselves: no latent, no attributes
                )
            with watch("cipher"):
                region_keys = [cipher.derive_region_key(content_key, nonce, i) for i in range(len(faces))]
            wanted = None
            if self.codec.candidates > 1:  # what the strangers must look like
                with watch("choose"):
                    wanted = strangers.describe(
                        self.judge, original, points, crops, landmarks, expression,
                        self.skin_weights, self.face_weights,
                    )  # fmt: skip
            if latents is None:
                chosen, u_enc, rendered, stranger_meshes = self._pixel_strangers(
                    content_key, nonce, crops, landmarks, regions, wanted, watch
                )
                attributes = np.zeros((len(faces), 0), np.float32)
            else:
                chosen, u_enc, rendered, stranger_meshes = self._strangers(
                    content_key, nonce, latents, crops, landmarks, regions, wanted, watch
                )
                attributes = latents.attributes
            size = self.codec.crop_size
            rng = np.random.default_rng(int.from_bytes(nonce[:8], "little"))
            if stranger_meshes is None:  # the chooser did not measure them
                with watch("composite"):
                    stranger_meshes = self.mesh.fit_all(list(rendered), landmarks)
            for i, (a, region_key) in enumerate(zip(alignments, region_keys, strict=True)):
                with watch("composite"):
                    if meshes[i].found:
                        drawn = stranger_meshes[i]
                        stranger = face_region(rendered[i], drawn.face_oval(), drawn.features(), self.skin_weights)
                        mask = face_mask([regions[i], stranger], size, self.feather)
                    else:  # blurred, not replaced (below): a wide feather, or the blur ends in a seam
                        mask = face_mask([regions[i]], size, self.eye_gap * UNFOUND_FEATHER)
                    box = face_box(mask, a, photo.size)
                    mask_weights = crop_weights(mask, size)
                    skin = lab_stats(crops[i], self.skin_weights * mask_weights)
                    if meshes[i].found:
                        edge = EdgeMembrane.around(crops[i], mask_weights, skin)
                        blended = self._blend(rendered[i], skin, edge)
                        weights = composite_face(out, blended, a, mask, box, rng)
                    else:  # a profile, or no face at all: a frontal stranger would not fit it
                        weights = obscure_face(out, a, mask, box, self.eye_gap, rng)
                pixels = None
                if fidelity == "exact":
                    with watch("seal"):
                        touched = touched_pixels(original, box, weights)
                        pixels = envelope.seal_face_pixels(region_key, touched, face_aad(nonce, i, box))
                records.append(
                    envelope.FaceRecord(
                        transform=a.matrix,
                        box=box,
                        mask=mask.raster,
                        attributes=attributes[i],
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
                cipher_id=self.cipher.id,
                cipher_fingerprint=self.cipher.fingerprint,
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

    def _cipher_for(self, env: envelope.Envelope, codec: Codec) -> Cipher:
        """The cipher ``env`` was made with, for ``codec`` (loaded once); CipherMismatch when this
        Veil does not have it or has other weights for it. Only rendering needs it: stored pixels
        come back whatever the cipher."""
        with self._ciphers_lock:
            found = self._ciphers.get((env.cipher_id, codec.fingerprint))
            if found is None:
                if env.cipher_id not in CIPHERS:
                    raise CipherMismatch(
                        f"this photo was anonymized with the {env.cipher_id} cipher, which this Veil does not have"
                    )
                found = load_cipher(env.cipher_id, codec)
                self._ciphers[(env.cipher_id, codec.fingerprint)] = found
        if found.fingerprint != env.cipher_fingerprint:
            raise CipherMismatch(
                f"this photo was anonymized with other {env.cipher_id} cipher weights "
                f"({env.cipher_fingerprint.hex()[:12]}) than this Veil has ({found.fingerprint.hex()[:12]}); "
                "recover it with the weights it was made with"
            )
        stored = {r.identity.dtype.str for r in env.faces}
        if stored - {found.stored_dtype}:
            raise CipherMismatch(f"this photo's encrypted identities are not what the {found.id} cipher stores")
        return found

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
        region_keys = [cipher.derive_region_key(content_key, env.nonce, i) for i in range(len(env.faces))]
        rendered = None
        if any(render):
            with watch("cipher"):
                face_cipher = self._cipher_for(env, codec)
                secrets = [FaceSecret(content_key, env.nonce, i, r.candidate) for i, r in enumerate(env.faces)]
                stored = np.stack([r.identity for r in env.faces])
                if face_cipher.space == "pixels":  # the stored anonymized crops, decrypted: the faces themselves
                    size = codec.crop_size
                    if stored.shape[1] != 3 * size * size:
                        raise CipherMismatch(f"this photo's stored face crops are not {size} px crops")
                    crops = stored.reshape(-1, size, size, 3).astype(np.uint8, copy=False)  # its stored dtype
                    rendered = face_cipher.decrypt_crop_faces(crops, secrets)
                else:
                    identity = face_cipher.decrypt_faces(stored, secrets)
            if rendered is None:
                with watch("render"):
                    attributes = np.stack([r.attributes for r in env.faces])
                    rendered = codec.render(Latents(identity, attributes), typical=decoy)
        rng = np.random.default_rng(int.from_bytes(env.nonce[8:], "little"))
        with watch("composite"):
            for i in reversed(range(len(env.faces))):  # undo in the opposite order of anonymization
                record = env.faces[i]
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
                        stored_skin = record.skin.astype(np.float64)
                        edge = EdgeMembrane.around(crop(out, a), crop_weights(mask, codec.crop_size), stored_skin)
                        blended = self._blend(rendered[i], stored_skin, edge)
                        composite_face(out, blended, a, mask, record.box, rng)
                else:
                    restore_face(out, env, i, region_keys[i])
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
        """Each face's stranger among the codec's candidate keys (:mod:`cipher_worker.strangers`;
        ``wanted`` is needed when there are several): (N,) chosen candidate, (N, d) its encrypted
        identity as the cipher stores it, (N, S, S, 3) its render, and its mesh if the choice
        measured it."""
        n, count = len(crops), self.codec.candidates
        with watch("cipher"):
            # every face's candidates, face-major: row i·K + c is face i under candidate key c
            secrets = [FaceSecret(content_key, nonce, i, c) for i in range(n) for c in range(count)]
            u_all = self.cipher.encrypt_faces(np.repeat(latents.identity, count, axis=0), secrets)
            candidates = Latents(self.cipher.latent(u_all), np.repeat(latents.attributes, count, axis=0))
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

    def _pixel_strangers(
        self,
        content_key: bytes,
        nonce: bytes,
        crops: np.ndarray,
        landmarks: np.ndarray,
        regions: list[np.ndarray],
        wanted: strangers.Original | None,
        watch: Stopwatch,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[MeshResult] | None]:
        """:meth:`_strangers` for a pixel-space cipher: each face's crop transformed under each of
        its candidate keys (nothing foresees a transformed crop, so only the codec's ``finalists``
        keys are drawn, every one judged); (N,) chosen candidate, (N, S·S·3) its anonymized crop
        as the envelope stores it, (N, S, S, 3) that crop, and its mesh if the choice measured it."""
        n = len(crops)
        count = min(self.codec.candidates, self.codec.finalists)
        with watch("cipher"):
            secrets = [FaceSecret(content_key, nonce, i, c) for i in range(n) for c in range(count)]
            anonymized = self.cipher.encrypt_crop_faces(np.repeat(crops, count, axis=0), secrets)
        picked, meshes = np.zeros(n, int), None
        if count > 1:
            assert wanted is not None
            with watch("choose"):
                picked, meshes = self._choose(crops, regions, anonymized, wanted, landmarks, None)
        stranger = anonymized[np.arange(n) * count + picked]
        return picked, stranger.reshape(n, -1), stranger, meshes

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
        edges = [EdgeMembrane.around(c, w, k) for c, w, k in zip(crops, region_weights, skins, strict=True)]
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
