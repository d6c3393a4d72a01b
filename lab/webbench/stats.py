"""Small helpers of the benchmark: progress lines and percentiles."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np


def log(message: str) -> None:
    print(f"[bench-web] {message}", file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 (linear interpolation), min and max of ``values``."""
    data = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(data, 50)),
        "p95": float(np.percentile(data, 95)),
        "min": float(data.min()),
        "max": float(data.max()),
    }
