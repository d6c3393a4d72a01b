"""What every torch codec does the same way: choose the device, turn uint8 RGB crops into a
generator's [-1, 1] tensors and back, and name a weights file by its bytes."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

_CHUNK = 1 << 22


def pick_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` when given, else CUDA when torch sees one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def crops_to_tensor(crops: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1] on ``device``."""
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def tensor_to_crops(images: torch.Tensor) -> np.ndarray:
    """A generator's (N, 3, H, W) output in [-1, 1] → (N, H, W, 3) uint8 on the CPU."""
    return images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def file_fingerprint(path: str | os.PathLike[str]) -> bytes:
    """SHA-256 of the file's bytes (read in chunks, ≈ 1 s per GB): names exact weights in envelopes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()
