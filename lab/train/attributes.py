"""Fit the identity/attribute split of the dcgan64 latent from generated samples.

z ~ N(0, I) is isotropic, so any orthonormal basis of R^100 keeps it standard normal. We
measure on G(z) what a replacement face must keep — its five landmarks, and from the dense
mesh its eye and mouth openness, smile, yaw and pitch — regress them on z, and take the k
directions of z that explain them best as the attribute subspace. Identity is the
orthogonal complement. Gender and age are not linear in z (a probe reads them at the base
rate): :mod:`cipher_worker.strangers` keeps them by choosing among candidate strangers. Colours are left to the
compositor's colour match: with skin, surround and light colours in the fit (16
dimensions), strangers drawn under different keys shared so much that SFace called 57% of
them one person. The mean landmarks double as the codec's alignment template.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cipher_worker.codecs.dcgan64_net import Z_DIM, load_generator
from cipher_worker.codecs.tensors import tensor_to_crops
from cipher_worker.detect import FaceDetector
from cipher_worker.mesh import EXPRESSION, FaceMesh

ATTRIBUTE_DIM = 12
_UPSCALE = 4
_PAD = 64


def measure_generated(images: np.ndarray, detector: FaceDetector) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64, 3) uint8 → (landmarks (N, 5, 2) in crop px, ok (N,) bool)."""
    landmarks = np.zeros((len(images), 5, 2))
    ok = np.zeros(len(images), bool)
    for i, image in enumerate(images):
        big = cv2.resize(image, None, fx=_UPSCALE, fy=_UPSCALE, interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        faces = detector.detect(big)
        if faces:
            best = max(faces, key=lambda f: f.score)
            landmarks[i] = (best.landmarks - _PAD) / _UPSCALE
            ok[i] = True
    return landmarks, ok


def fit_attributes(out: Path, seed: int = 0, samples: int = 6000, log=print) -> dict[str, float]:
    started = time.perf_counter()
    generator = load_generator()
    z = torch.randn(samples, Z_DIM, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = torch.cat([generator(chunk) for chunk in z.split(500)])
    images_u8 = tensor_to_crops(images)
    landmarks, ok = measure_generated(images_u8, FaceDetector(score_threshold=0.5, min_face=16))
    log(f"landmarks found on {ok.mean():.1%} of {samples} samples ({time.perf_counter() - started:.0f}s)")
    mesh = FaceMesh()
    expression = np.stack([mesh.fit(im, lm).expression() if good else np.zeros(len(EXPRESSION))
                           for im, lm, good in zip(images_u8, landmarks, ok, strict=True)])  # fmt: skip
    log(f"expressions measured ({time.perf_counter() - started:.0f}s)")
    template = landmarks[ok].mean(0)
    features = np.concatenate([landmarks.reshape(samples, 10), expression], axis=1)[ok]
    zs = z.numpy().astype(np.float64)[ok]
    mean, std = features.mean(0), features.std(0)
    target = (features - mean) / std
    coef, *_ = np.linalg.lstsq(np.column_stack([zs, np.ones(len(zs))]), target, rcond=None)
    weights = coef[:Z_DIM]  # (100, M): how each z direction moves each standardized feature
    u, sv, _ = np.linalg.svd(weights, full_matrices=True)
    basis = u  # columns: attribute directions first (by explained variance), then identity
    r2_full = 1 - ((zs @ weights + coef[Z_DIM] - target) ** 2).mean(0)
    proj = zs @ basis[:, :ATTRIBUTE_DIM] @ basis[:, :ATTRIBUTE_DIM].T
    r2_attr = 1 - ((proj @ weights + coef[Z_DIM] - target) ** 2).mean(0)
    names = [f"landmark {i // 2} {'xy'[i % 2]}" for i in range(10)] + list(EXPRESSION)
    metrics = {"r2_all_z": float(r2_full.mean()), "r2_attribute_subspace": float(r2_attr.mean())}
    metrics.update({f"r2 {name}": float(v) for name, v in zip(names, r2_attr, strict=True)})
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        basis=basis.astype(np.float64),
        attribute_dim=ATTRIBUTE_DIM,
        template=template,
        feature_weights=weights,
        feature_mean=mean,
        feature_std=std,
        singular_values=sv,
    )
    log(f"saved {out}: {metrics}; template {np.round(template, 2).tolist()}")
    return metrics
