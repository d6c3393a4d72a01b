"""RiDDLE's losses (CVPR 2023, §3.2), scaled down: per face ``m = 2`` passwords encrypt, each
encrypted code is decrypted by its own password and by ``n = 1`` wrong one (the decryptor is
a second network here, :mod:`cipher_worker.ciphers.riddle_net` says why):

* **identity diversity** ``L_div``: max(0, cos) between every pair of de-identified faces (the
  strangers and the wrong-password recoveries);
* **de-identification** ``L_deid``: max(0, cos) of each of them to the original;
* **identity recovery** ``L_rec``: 1 − cos of the right-password recovery to the original —
  and, because Veil recovers by latent, the latent error of that recovery (``rec_latent``);
* **pixel** L1 of every generated face to the original at the paper's 0.05 (phase B);
* **latent regularisation** ``‖w − w*‖`` at the paper's 0.01 on every encrypted and decrypted
  code; and, in place of LPIPS and the face parser (no offline weights), their first two
  moments held to the generator's N(0, I) (``prior``), which keeps strangers and decoys typical;
* the "must differ" terms also as latent distances (``far_*``; see ``cipher_kit.hinge_near``).
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import Tensor

from cipher_worker.ciphers.riddle_net import EncryptorSpec, LatentEncryptor

from .cipher_kit import (
    PRIOR_BATCH,
    JudgedFaces,
    Losses,
    Objective,
    hinge_near,
    id_change,
    id_kept,
    prior_moments,
    recovery_error,
)


def _latent_reg(x: Tensor, codes: list[Tensor]) -> Tensor:
    """The paper's ‖w − w*‖ over every generated code, per √d so it does not grow with d."""
    return torch.stack([(c - x).norm(dim=1).mean() for c in codes]).mean() / x.shape[1] ** 0.5


class RiDDLEObjective(Objective):
    name = "riddle"
    weights: ClassVar[dict[str, float]] = {
        "rec_latent": 20.0,
        "rec_id": 1.0,
        "pixel": 0.05,
        "latent": 0.01,
        "prior": 1.0,
    }
    ramped = ("rec_latent",)
    defaults: ClassVar[dict[str, int | float]] = {
        "latent_steps": 1200,
        "latent_batch": 64,
        "sface_steps": 100,
        "sface_batch": 6,
    }
    net: LatentEncryptor

    def __init__(self, dim: int, seed: int) -> None:
        self.net = LatentEncryptor(EncryptorSpec(dim=dim))

    def passwords(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        p = torch.randn(n, self.net.spec.password_dim, generator=gen)  # the cipher's: an N(0, I) latent
        return p, p

    def _codes(self, x: Tensor, gen: torch.Generator) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(strangers, their right-password recoveries, their wrong-password recoveries)."""
        passwords = [self.passwords(len(x), gen)[0] for _ in range(2)]
        strangers = [self.net(x, p) for p in passwords]
        right = [self.net.inverse(y, p) for y, p in zip(strangers, passwords, strict=True)]
        wrong = [self.net.inverse(y, self.passwords(len(x), gen)[0]) for y in strangers]
        return strangers, right, wrong

    def _latent_terms(self, x: Tensor, strangers: list[Tensor], right: list[Tensor], wrong: list[Tensor]) -> Losses:
        others = strangers + wrong
        return {
            "rec_latent": torch.stack([recovery_error(r, x) for r in right]).mean(),
            "far_anon": torch.stack([hinge_near(c, x) for c in others]).mean(),
            "far_div": torch.stack([hinge_near(a, b) for a, b in itertools.combinations(others, 2)]).mean(),
            "latent": _latent_reg(x, others + right),
            "prior": torch.stack([prior_moments(c) for c in others]).mean(),
        }

    def latent_losses(self, x: Tensor, gen: torch.Generator) -> Losses:
        strangers, right, wrong = self._codes(x, gen)
        others = strangers + wrong
        return {
            "div": id_change(list(itertools.combinations(others, 2))),
            "deid": id_change([(c, x) for c in others]),
            **self._latent_terms(x, strangers, right, wrong),
        }

    def _prior(self, gen: torch.Generator) -> Tensor:
        """The prior term on a batch of prior samples' codes (the SFace phase's faces are too few)."""
        strangers, _, wrong = self._codes(torch.randn(PRIOR_BATCH, self.net.spec.dim, generator=gen), gen)
        return torch.stack([prior_moments(c) for c in strangers + wrong]).mean()

    def sface_losses(self, faces: JudgedFaces, gen: torch.Generator) -> Losses:
        x = faces.x
        strangers, right, wrong = self._codes(x, gen)
        # renders: both strangers, one wrong-password recovery, one right-password recovery (SFace
        # costs ~0.2 s a face with its gradient; the other codes are held by their latent terms)
        images = [faces.show(c) for c in (strangers[0], strangers[1], wrong[0])]
        recovered = faces.show(right[0], typical=False)
        e = [faces.features(i) for i in images]
        return {
            "div": id_change(list(itertools.combinations(e, 2))),
            "deid": id_change([(f, faces.e) for f in e]),
            "rec_id": id_kept(faces.features(recovered), faces.e),
            "pixel": torch.stack([(i - faces.original).abs().mean() for i in [*images, recovered]]).mean(),
            **self._latent_terms(x, strangers, right, wrong),
            "prior": self._prior(gen),  # in place of the few faces' own
        }
