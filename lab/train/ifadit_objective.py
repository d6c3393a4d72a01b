"""iFADIT's phase II losses (§3.5.2 of the paper), scaled down; phase I (disentangle and
reconstruct) is the codec itself, already trained:

* **anonymity** ``max(0, cos(E(G(x′)), E(G(x))))``: the stranger is not the original;
* **diversity** between the strangers of one face under two keys, and of two faces under one
  key;
* **de-anonymization** with a wrong key ``max(0, cos(E(G(T⁻¹(x′, k₂))), E(G(x))))``; with the
  right key it is exact by construction, so that term of the paper is zero here;
* **prior** (what keeps the stranger natural, in place of the paper's LPIPS and face-parser
  image terms, which have no offline weights): KL(T_k#N(0, I) ‖ N(0, I)), exact for a flow:
  E[½|x′|² − ½|x|² − log|det J|] / d. It is zero when every key's map keeps the generator's
  prior, so strangers are as typical as the generator's own faces. The paper applies its image
  terms to falsely recovered faces too; the same KL can hold the wrong-key recovery
  T⁻¹(T(x, k₁), k₂) to the prior (its log-det: k₁'s forward minus k₂'s at the result;
  weight ``prior_wrong``, off for the committed weights: it trades a wrong key's distance from
  the original for natural decoys, docs/cipher.md);
* a pixel L1 at the paper's weight for anonymized images (0.01), which keeps the outline;
* the latent distances of the two key terms (:func:`~lab.train.cipher_kit.hinge_near`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from cipher_worker.ciphers.ifadit_net import KEY_BYTES, FlowSpec, SecureIdentityFlow

from .cipher_kit import JudgedFaces, Losses, Objective, hinge_cos, hinge_near


def _keys(n: int, gen: torch.Generator) -> Tensor:
    """Random passwords in the cipher's form: KEY_BYTES bytes each mapped to [−1, 1]."""
    return torch.randint(0, 256, (n, KEY_BYTES), generator=gen).float() / 127.5 - 1


def _prior_kl(x: Tensor, y: Tensor, logdet: Tensor) -> Tensor:
    """KL(T#N(0, I) ‖ N(0, I)) per coordinate, estimated on the batch."""
    return (0.5 * (y**2).sum(1) - 0.5 * (x**2).sum(1) - logdet).mean() / x.shape[1]


class IFADITObjective(Objective):
    name = "ifadit"
    # the wrong-key terms at 1: a wrong key must never bring the face back; the prior on wrong-key
    # recoveries 0 (see docs/cipher.md: at 6, with the wrong terms at 2, decoys stay inside the
    # prior but a wrong key's face drifts towards the original)
    weights: ClassVar[dict[str, float]] = {
        "prior": 6.0,
        "prior_wrong": 0.0,
        "pixel": 0.01,
        "wrong": 1.0,
        "far_wrong": 1.0,
    }
    defaults: ClassVar[dict[str, int | float]] = {"latent_steps": 2500, "sface_steps": 120}
    net: SecureIdentityFlow

    def __init__(self, dim: int, seed: int) -> None:
        self.net = SecureIdentityFlow(FlowSpec(dim=dim, seed=seed))

    def passwords(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        key = _keys(n, gen)
        return key, key

    def encrypt(self, x: Tensor, password: Tensor) -> Tensor:
        return self.net(x, password)[0]

    def _keyed(self, x: Tensor, key: Tensor, k2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Strangers under ``key`` and ``k2``, the wrong-key recovery, and the log-dets of its prior
        (each loss is computed where it stands in its dict: the backward pass's order, and so the
        weights' last bits, follow the order terms were built in)."""
        y1, logdet = self.net(x, key)
        y2, _ = self.net(x, k2)
        wrong = self.net.inverse(y1, k2)
        _, wrong_logdet = self.net(wrong, k2)  # the composed map's log-det: forward k1 minus forward k2 there
        return y1, y2, wrong, logdet, logdet - wrong_logdet

    def latent_losses(self, x: Tensor, gen: torch.Generator) -> Losses:
        k1 = _keys(len(x), gen)
        y1, y2, wrong, logdet, wrong_logdet = self._keyed(x, k1, _keys(len(x), gen))
        return {
            "anon": hinge_cos(y1, x),
            "div_key": hinge_cos(y1, y2),
            "div_face": hinge_cos(y1, self.net(x.roll(1, 0), k1)[0]),  # another face under the same key
            "wrong": hinge_cos(wrong, x),
            "far_key": hinge_near(y1, y2),
            "far_wrong": hinge_near(wrong, x),
            "prior": _prior_kl(x, y1, logdet),
            "prior_wrong": _prior_kl(x, wrong, wrong_logdet),
        }

    def sface_losses(self, faces: JudgedFaces, gen: torch.Generator) -> Losses:
        x = faces.x
        key = _keys(1, gen).expand(len(x), KEY_BYTES)  # one key for the batch: inter-face diversity
        y1, y2, wrong, logdet, wrong_logdet = self._keyed(x, key, _keys(len(x), gen))
        anon1 = faces.show(y1)
        e1 = faces.features(anon1)
        e2 = faces.features(faces.show(y2))
        e_wrong = faces.features(faces.show(wrong))
        return {
            "anon": hinge_cos(e1, faces.e),
            "div_key": hinge_cos(e1, e2),
            "div_face": hinge_cos(e1, e1.roll(1, 0)),
            "wrong": hinge_cos(e_wrong, faces.e),
            "far_key": hinge_near(y1, y2),
            "far_wrong": hinge_near(wrong, x),
            "prior": _prior_kl(x, y1, logdet),
            "prior_wrong": _prior_kl(x, wrong, wrong_logdet),
            "pixel": (anon1 - faces.original).abs().mean(),
        }

    def metrics(self, x: Tensor, gen: torch.Generator) -> dict[str, float]:
        k1, k2 = _keys(len(x), gen), _keys(len(x), gen)
        y1, logdet = self.net(x, k1)
        wrong = self.net.inverse(y1, k2)
        return {
            "prior_kl": float(_prior_kl(x, y1, logdet)),
            "wrong_key_prior_kl": float(_prior_kl(x, wrong, logdet - self.net(wrong, k2)[1])),
        }
