"""FaceRSA's three losses (AAAI 2024), scaled down, for two password pairs ``(e₁, d₁)``,
``(e₂, d₂)`` (``dᵢ = −eᵢ``) and a wrong decryption password ``d′``:

* **single** ``L_single``: identity change (max(0, cos)) on (I, I_e₁), (I, I_e₂), (I, I_e₁,d′),
  (I_e₁, I_e₂) and (I_e₁, I_e₁,d′) (property d: a wrong password shows neither face);
  recovery of (I, I_e₁,d₁) as 1 − cos and a pixel L2, and, since Veil recovers by latent, its
  latent error; the regularisation ‖w* − w‖ (the paper's, small) and the strangers' first two
  moments held to N(0, I) (``prior``, in place of LPIPS and the face parser: no offline weights);
* **sequential** ``L_seq``: the sequence I → I_e₁ → I_e₁,e₂ → then d₂, d₁ must pass back through
  I_e₁ to I (property f), and, in the other order, d₁ then d₂ through I_e₂ to I (property g,
  interchangeability); the doubly anonymized face differs from both before it;
* **associated** ``L_asso``: the associated password e₁ + e₂ gives I_e₁,e₂ in one step
  (property h), and d₁ + d₂ undoes it (the paper only trains the first and finds the second
  follows; Veil's combined-key check asks for it, so it is trained).

The "must be the same" terms are latent errors in both phases (what the evaluation measures);
the "must differ" terms are latent cosines and distances in phase A, SFace cosines in phase B.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from cipher_worker.ciphers.facersa_net import MapperSpec, PasswordMapper

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

_SHOWN = ("y1", "y2", "wrong", "y12", "assoc")  # the codes a viewer may see as faces
# the identity changes of the single and sequential losses: (a, b) must not be one person
_CHANGES = (("y1", "x"), ("y2", "x"), ("wrong", "x"), ("y1", "y2"), ("wrong", "y1"), ("y12", "x"), ("y12", "y1"))


def _prior(c: dict[str, Tensor]) -> Tensor:
    """The shown codes' first two moments against N(0, I)."""
    return torch.stack([prior_moments(c[k]) for k in _SHOWN]).mean()


class FaceRSAObjective(Objective):
    name = "facersa"
    weights: ClassVar[dict[str, float]] = {
        "recon": 20.0,
        "seq": 10.0,
        "anyorder": 10.0,
        "asso": 10.0,
        "pixel": 1.0,
        "reg": 0.01,
        "prior": 0.1,  # keeping the prior needs a rotation, which an edit odd in the password cannot be
    }
    ramped = ("recon", "seq", "anyorder", "asso")
    defaults: ClassVar[dict[str, int | float]] = {
        "latent_steps": 1500,
        "latent_batch": 128,
        "sface_steps": 100,
        "sface_batch": 6,
    }
    net: PasswordMapper

    def __init__(self, dim: int, seed: int) -> None:
        self.net = PasswordMapper(MapperSpec(dim=dim))

    def passwords(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        e = torch.randint(0, 2, (n, self.net.spec.bits), generator=gen).float() * 2 - 1  # the N-bit password as ±1
        return e, -e

    def _codes(self, x: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        n, m = len(x), self.net
        (e1, d1), (e2, d2), (_, wrong) = (self.passwords(n, gen) for _ in range(3))
        c: dict[str, Tensor] = {"y1": m(x, e1), "y2": m(x, e2)}
        c["rec"], c["wrong"] = m(c["y1"], d1), m(c["y1"], wrong)
        c["y12"] = m(c["y1"], e2)
        c["back1"] = m(c["y12"], d2)  # ≈ y1
        c["back0"] = m(c["back1"], d1)  # ≈ x
        c["other1"] = m(c["y12"], d1)  # ≈ y2
        c["other0"] = m(c["other1"], d2)  # ≈ x
        c["assoc"] = m(x, e1 + e2)  # ≈ y12
        c["assoc_back"] = m(c["y12"], d1 + d2)  # ≈ x
        return c

    def _latent_terms(self, x: Tensor, c: dict[str, Tensor]) -> Losses:
        shown = [c[k] for k in _SHOWN]
        return {
            "recon": recovery_error(c["rec"], x),
            "seq": (recovery_error(c["back1"], c["y1"]) + recovery_error(c["back0"], x)) / 2,
            "anyorder": (recovery_error(c["other1"], c["y2"]) + recovery_error(c["other0"], x)) / 2,
            "asso": (recovery_error(c["assoc"], c["y12"]) + recovery_error(c["assoc_back"], x)) / 2,
            "far": torch.stack(
                [hinge_near(a, b) for a, b in ((c["y1"], x), (c["y1"], c["y2"]), (c["wrong"], x), (c["y12"], c["y1"]))]
            ).mean(),
            "reg": torch.stack([(s - x).norm(dim=1).mean() for s in shown]).mean() / x.shape[1] ** 0.5,
            "prior": _prior(c),
        }

    def latent_losses(self, x: Tensor, gen: torch.Generator) -> Losses:
        c = self._codes(x, gen)
        seen = {"x": x, **c}
        return {"change": id_change([(seen[a], seen[b]) for a, b in _CHANGES]), **self._latent_terms(x, c)}

    def sface_losses(self, faces: JudgedFaces, gen: torch.Generator) -> Losses:
        x = faces.x
        c = self._codes(x, gen)
        # five renders a face (SFace costs ~0.2 s a face with its gradient); the sequential and
        # associated codes are held by their latent errors
        e = {k: faces.features(faces.show(c[k])) for k in ("y1", "y2", "wrong", "y12")}
        recovered = faces.show(c["rec"], typical=False)
        seen = {"x": faces.e, **e}
        return {
            "change": id_change([(seen[a], seen[b]) for a, b in _CHANGES]),
            "recon_id": id_kept(faces.features(recovered), faces.e),
            "pixel": (recovered - faces.original).pow(2).mean(),
            **self._latent_terms(x, c),
            # on a batch of prior samples' codes: the SFace phase's few faces give a covariance of rank < d
            "prior": _prior(self._codes(torch.randn(PRIOR_BATCH, self.net.spec.dim, generator=gen), gen)),
        }
