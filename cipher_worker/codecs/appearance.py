"""What a latent's stranger will look like, read off the latent without rendering it.

A small network (two hidden layers, trained by ``python -m lab.train appearance``
on generated faces) predicts, for a codec's coordinates as rendered, the looks the stranger
chooser cares about: the gender the judge (:mod:`cipher_worker.agegender`) will see, the
mesh's eye and mouth openness, smile, yaw and pitch (:mod:`cipher_worker.mesh`), and the
render's own skin colour, and how dark it is where glasses, a moustache, a beard or a hat band
would show. Not age: the age network's reading of a render is too fickle to learn
from the latent (on held-out faces a prediction did worse than the mean age; trained on
32,000 faces with age as a label it explained 2% of its variance).

Predicting costs microseconds where rendering and judging cost milliseconds, so many candidate
pads can be screened and only the likeliest few rendered.
It runs in NumPy: no device, no graph, the same numbers everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VeilError

# predicted per latent, in this order; "male" is P(male), the rest in the measuring code's units;
# the last six are the stranger chooser's accessory probes (cipher_worker.strangers), in its order
LOOKS = ("male", "eye openness", "mouth openness", "smile", "yaw", "pitch", "L", "a", "b",
         "bridge", "right temple", "left temple", "upper lip", "chin", "forehead")  # fmt: skip


class AppearanceModel:
    """(N, D) coordinates → (N, len(LOOKS)) predicted looks."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise VeilError(f"{path.name} is missing; rebuild it with `python -m lab.train appearance`")
        weights = np.load(path)
        self._layers = [(weights[f"w{i}"], weights[f"b{i}"]) for i in range(int(weights["layers"]))]
        self._mean, self._std = weights["out_mean"], weights["out_std"]
        self.input_dim = self._layers[0][0].shape[0]

    def predict(self, coords: np.ndarray) -> np.ndarray:
        x = coords.astype(np.float32)
        for w, b in self._layers[:-1]:
            x = x @ w + b
            x = x / (1 + np.exp(-x))  # SiLU, as trained
        w, b = self._layers[-1]
        out = x @ w + b
        looks = np.empty_like(out)
        looks[:, 0] = 1 / (1 + np.exp(-out[:, 0]))
        looks[:, 1:] = out[:, 1:] * self._std + self._mean
        return looks
