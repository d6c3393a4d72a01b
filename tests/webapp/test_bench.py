"""The web app benchmark's album-page part runs on a world of its own and reports its rows.

Only behaviour is checked (it runs, cleans up, reports the rows); the numbers are the bench's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # a subprocess that loads the model: about 10 s


def test_the_album_page_part_reports_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench-web.md"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)  # SQLite in the bench's own temp dir
    argv = [sys.executable, "-m", "lab.webbench", "--parts", "page", "--photos", "20", "--requests", "5"]
    done = subprocess.run([*argv, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    assert "| album page, 20 photos: server time p95 (5 requests) |" in report
    assert "| album page: SQL queries per request | " in report
    assert "it does not grow with the photos" in report
    assert done.stdout.startswith("| what | measured | budget | ok |")
    assert [p.name for p in tmp_path.iterdir()] == ["bench-web.md"]  # its temp dir is gone
