"""``dcgan64``: the embedded default codec (64×64 DCGAN + our data-free encoder).

Latent z ∈ R^100 ~ N(0, I). A fixed orthonormal basis (fitted by ``python -m
lab.train attributes``) splits it into k attribute coordinates (what the
landmarks, eye and mouth openness, smile and head pose depend on) and 100 − k identity
coordinates; both stay standard normal, so the identity part feeds the torus cipher
without further whitening.

Earlier splits stay in ``weights/`` (``dcgan64_attributes_v1.npz``: 8 dimensions from the
landmarks alone), so photos anonymized with them still recover: the envelope's codec
fingerprint names the split (:meth:`DCGAN64Codec.for_fingerprint`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import VeilError
from .appearance import AppearanceModel
from .base import Codec, Latents
from .dcgan64_net import (
    IMAGE_SIZE,
    DCGANEncoder,
    generator_weights_path,
    load_generator,
)
from .tensors import crops_to_tensor, file_fingerprint, pick_device, tensor_to_crops

WEIGHTS_DIR = Path(__file__).parent / "weights"
ENCODER_PATH = WEIGHTS_DIR / "dcgan64_encoder.pt"
ATTRIBUTES_PATH = WEIGHTS_DIR / "dcgan64_attributes.npz"
APPEARANCE_PATH = WEIGHTS_DIR / "dcgan64_appearance.npz"
LEGACY_ATTRIBUTES = (WEIGHTS_DIR / "dcgan64_attributes_v1.npz",)
# identity scale for strangers: nearer 1 they are farther from the average face everyone resembles
# (dlib re-identified 5.7/5.35% of the unseen faces at 0.9, 4.8/4.7% at 0.95), at 1 pose slips
TRUNCATION = 0.95
CANDIDATES = 48  # pads drawn per face; their looks are foreseen in microseconds each
# how much more than its fit says each measured feature is trusted: the mouth's openness and smile,
# which identity sways most, are held to what was measured (a smile shows in more strangers)
_FEATURE_TRUST = np.ones(15)
_FEATURE_TRUST[11:13] = 3.0
FINALISTS = 6  # … and the likeliest this many rendered (2.8 ms each on one core) and judged


class DCGAN64Codec(Codec):
    id = "dcgan64"
    crop_size = IMAGE_SIZE
    candidates = CANDIDATES
    finalists = FINALISTS

    def __init__(
        self,
        device: str | torch.device | None = None,
        attributes_path: Path = ATTRIBUTES_PATH,
        nets: tuple[torch.nn.Module, torch.nn.Module] | None = None,
        *,
        foresight: bool = True,
    ) -> None:
        """``foresight=False`` leaves the appearance model out (its own training needs the codec)."""
        self.device = pick_device(device)
        for path in (ENCODER_PATH, attributes_path):
            if not path.is_file():
                raise VeilError(f"{path.name} is missing; rebuild it with `python -m lab.train`")
        self.generator, self.encoder = nets or (load_generator(self.device), _load_encoder(self.device))
        split = np.load(attributes_path)
        self.attribute_dim = int(split["attribute_dim"])
        self.identity_dim = 100 - self.attribute_dim
        self.template = split["template"].astype(np.float64)
        self._basis = torch.from_numpy(split["basis"]).to(self.device)  # (100, 100) orthonormal, float64
        # linear model of the measured features given the attribute coordinates (standardized units)
        self._feature_mean, self._feature_std = split["feature_mean"], split["feature_std"]
        self._feature_map = split["basis"][:, : self.attribute_dim].T @ split["feature_weights"]  # (k, M)
        self._feature_noise = np.clip(1 - (self._feature_map**2).sum(0), 0.05, 1.0)  # unexplained variance
        self.fingerprint = _fingerprint([generator_weights_path(), ENCODER_PATH, attributes_path])
        self._legacy: dict[bytes, Path] = {}
        # fitted on this split's coordinates: earlier splits only recover, never choose strangers
        self._appearance: AppearanceModel | None = None
        if attributes_path == ATTRIBUTES_PATH and foresight:
            self._appearance = AppearanceModel(APPEARANCE_PATH)
            self._legacy = {
                _fingerprint([generator_weights_path(), ENCODER_PATH, p]): p for p in LEGACY_ATTRIBUTES if p.is_file()
            }

    def for_fingerprint(self, fingerprint: bytes) -> Codec | None:
        if fingerprint == self.fingerprint:
            return self
        path = self._legacy.get(fingerprint)
        return None if path is None else DCGAN64Codec(self.device, path, (self.generator, self.encoder))

    def encode(self, crops: np.ndarray, landmarks: np.ndarray, expression: np.ndarray | None = None) -> Latents:
        with torch.inference_mode():
            z = self.encoder(crops_to_tensor(crops, self.device)).double()
            coords = (z @ self._basis).cpu().numpy()  # (N, 100): attributes first, identity after
        # the encoder's attribute guess, sharpened by what was measured on the real face: on the
        # test photos this moves the stranger's landmarks less than either source alone
        features = landmarks.reshape(len(landmarks), 10)
        if expression is not None and len(self._feature_mean) > 10:
            features = np.concatenate([features, expression], axis=1)
        attributes = self.measured_attributes(features, prior=coords[:, : self.attribute_dim])
        return Latents(identity=coords[:, self.attribute_dim :], attributes=attributes.astype(np.float32))

    def measured_attributes(self, features: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Posterior mean of the attribute coordinates given (N, M′) measured features — the
        landmarks in crop pixels, then (if measured) the mesh's expression — with prior
        N(prior, I) and features = coords · F + noise; unmeasured features are left out. (N, k)."""
        m = features.shape[1]
        f = (features - self._feature_mean[:m]) / self._feature_std[:m]
        fmap, noise = self._feature_map[:, :m], self._feature_noise[:m] / _FEATURE_TRUST[:m]
        precision = fmap @ np.diag(1 / noise) @ fmap.T + np.eye(self.attribute_dim)
        return np.linalg.solve(precision, (f / noise @ fmap.T + prior).T).T

    def foresee(self, latents: Latents) -> np.ndarray | None:
        if self._appearance is None:
            return None
        return self._appearance.predict(np.concatenate([latents.attributes, latents.identity * TRUNCATION], axis=1))

    def render(self, latents: Latents, *, typical: bool) -> np.ndarray:
        identity = latents.identity * (TRUNCATION if typical else 1.0)
        coords = np.concatenate([latents.attributes.astype(np.float64), identity], axis=1)
        with torch.inference_mode():
            z = (torch.from_numpy(coords).to(self.device) @ self._basis.T).float()
            return tensor_to_crops(self.generator(z))


def _load_encoder(device: torch.device) -> DCGANEncoder:
    checkpoint = torch.load(ENCODER_PATH, map_location="cpu", weights_only=True)
    encoder = DCGANEncoder()
    encoder.load_state_dict({k: v.float() for k, v in checkpoint["encoder"].items()})
    return encoder.eval().requires_grad_(False).to(device)


def _fingerprint(paths: list[Path]) -> bytes:
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_fingerprint(path)[:16])  # what every dcgan64 fingerprint so far hashed
    return digest.digest()[:16]
