"""``stylegan2``: a deployer's StyleGAN2 generator and e4e/pSp encoder behind the codec interface.

encode: FFHQ-aligned crop → encoder → W+ (n_latent × 512). The identity part is a range of
middle W+ layers (FaceRSA encrypts layers 6–9 of 18, where face identity lives; coarse
layers carry pose and face shape, fine layers colour and lighting), each layer whitened
(see ``whitening``) so the cipher sees N(0, I) coordinates. The other layers are the
attributes, kept as they are. render: un-whiten, reassemble W+, synthesise.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import BadCheckpoint, BadInput
from ..base import Codec, Latents
from ..tensors import crops_to_tensor, file_fingerprint, pick_device, tensor_to_crops
from . import whitening
from .encoder import StyleEncoder, load_encoder
from .generator import Generator, build_generator, load_generator

log = logging.getLogger(__name__)

# FaceRSA's identity layers, counted on an 18-layer (1024 px) model; scaled for others
DEFAULT_IDENTITY_LAYERS = (6, 9)
REFERENCE_LAYERS = 18
TRUNCATION = 0.7  # StyleGAN's usual ψ, applied to strangers' whitened identity layers
# Where FFHQ alignment (the crops e4e, pSp and FFHQ generators know) puts YuNet's five points,
# as fractions of the crop side: measured on the bundled photos against NVIDIA's recipe on
# dlib's 68 landmarks by `python -m lab.train ffhq-template` (spread ± 0.015)
FFHQ_TEMPLATE = np.array([[0.370, 0.466], [0.630, 0.466], [0.500, 0.614], [0.383, 0.728], [0.617, 0.728]])


def parse_layers(text: str) -> tuple[int, int]:
    """ "6-9" → (6, 9): an inclusive range of W+ layers on the 18-layer scale."""
    try:
        first, last = (int(part) for part in text.replace("–", "-").split("-"))
    except ValueError:
        raise BadInput(f"identity layers {text!r}: expected a range such as 6-9") from None
    if not 0 <= first <= last < REFERENCE_LAYERS:
        raise BadInput(f"identity layers {text!r}: expected 0 ≤ first ≤ last < {REFERENCE_LAYERS}")
    return first, last


def scaled_layers(layers: tuple[int, int], n_latent: int) -> range:
    """The W+ layers of an ``n_latent``-layer model that ``layers`` (18-layer scale) cover."""
    start = round(layers[0] * n_latent / REFERENCE_LAYERS)
    stop = max(start + 1, round((layers[1] + 1) * n_latent / REFERENCE_LAYERS))
    return range(start, min(stop, n_latent))


class StyleGAN2Codec(Codec):
    id = "stylegan2"

    def __init__(
        self,
        generator_ckpt: str | os.PathLike[str] | None,
        encoder_ckpt: str | os.PathLike[str] | None,
        *,
        identity_layers: tuple[int, int] = DEFAULT_IDENTITY_LAYERS,
        encoder_bf16: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = pick_device(device)
        if not encoder_ckpt:
            raise BadInput(
                "the stylegan2 codec needs an e4e or pSp encoder checkpoint: set VEIL_E4E_CKPT or pass --e4e-ckpt"
            )
        self.encoder: StyleEncoder
        self.encoder, decoder_state = load_encoder(encoder_ckpt, self.device, bf16=encoder_bf16)
        enc_digest = file_fingerprint(encoder_ckpt)
        self.generator: Generator
        if generator_ckpt:
            self.generator = load_generator(generator_ckpt, self.device)
            gen_digest, stats_home = file_fingerprint(generator_ckpt), Path(generator_ckpt)
        elif decoder_state:
            self.generator = build_generator(decoder_state, self.device, f"the decoder inside {encoder_ckpt}")
            gen_digest, stats_home = b"decoder of " + enc_digest, Path(encoder_ckpt)
        else:
            raise BadInput(
                f"{encoder_ckpt} has no decoder weights: give the generator too "
                "(VEIL_STYLEGAN2_CKPT / --stylegan2-ckpt)"
            )
        spec = self.generator.spec
        if (self.encoder.n_styles, self.encoder.style_dim) != (spec.n_latent, spec.style_dim):
            raise BadCheckpoint(
                f"the encoder predicts {self.encoder.n_styles} W+ layers of {self.encoder.style_dim}, the generator "
                f"({spec.size} px) takes {spec.n_latent} of {spec.style_dim}: they are not a pair (an encoder only "
                "works with the generator it was trained for)"
            )
        self.crop_size = spec.size
        self.template = FFHQ_TEMPLATE * spec.size
        self.identity_layers = scaled_layers(identity_layers, spec.n_latent)
        self.attribute_layers = [i for i in range(spec.n_latent) if i not in self.identity_layers]
        self.identity_dim = len(self.identity_layers) * spec.style_dim
        self.attribute_dim = len(self.attribute_layers) * spec.style_dim
        digest = hashlib.sha256(b"veil stylegan2 codec v1")
        for part in (gen_digest, enc_digest, f"{self.identity_layers.start}-{self.identity_layers.stop}".encode()):
            digest.update(hashlib.sha256(part).digest())
        self.fingerprint = digest.digest()[:16]
        self.whitening = whitening.cached(
            self.generator, stats_home.with_name(stats_home.name + ".veil-pca.npz"), hashlib.sha256(gen_digest).digest()
        )

    def encode(self, crops: np.ndarray, landmarks: np.ndarray, expression: np.ndarray | None = None) -> Latents:
        size = self.encoder.input_size
        with torch.inference_mode():
            x = crops_to_tensor(crops, self.device)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            wplus = self.encoder(x).cpu().numpy()  # (N, n_latent, d) float32
        n = len(crops)
        identity = self.whitening.whiten(wplus[:, self.identity_layers].astype(np.float64))
        return Latents(identity=identity.reshape(n, -1), attributes=wplus[:, self.attribute_layers].reshape(n, -1))

    def render(self, latents: Latents, *, typical: bool) -> np.ndarray:
        n, d = len(latents.identity), self.generator.spec.style_dim
        identity = latents.identity.reshape(n, len(self.identity_layers), d) * (TRUNCATION if typical else 1.0)
        wplus = np.empty((n, self.generator.n_latent, d), np.float32)
        wplus[:, self.identity_layers] = self.whitening.unwhiten(identity)
        wplus[:, self.attribute_layers] = latents.attributes.reshape(n, len(self.attribute_layers), d)
        with torch.inference_mode():
            images = self.generator(torch.from_numpy(wplus).to(self.device))
            return tensor_to_crops(images)
