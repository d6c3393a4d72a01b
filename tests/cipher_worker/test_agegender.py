"""The age and gender judge leaves nothing behind: no telemetry, no files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

JUDGE_ONE_FACE = """
import numpy as np
from cipher_worker.agegender import AgeGenderJudge
face = np.full((128, 128, 3), 128, np.uint8)
points = np.array([[[44.0, 52.0], [84.0, 52.0], [64.0, 74.0], [48.0, 94.0], [80.0, 94.0]]])
judged = AgeGenderJudge().judge([face], points)
assert 0 <= judged.male[0] <= 1 and 0 < judged.age[0] < 81
"""


def test_judging_a_face_writes_no_file(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", JUDGE_ONE_FACE], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
