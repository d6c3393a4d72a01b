"""What the web app's test modules share: a real Celery worker's handle and how long to wait for it."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from webapp.albums.models import Photo
from webapp.processes import Supervisor, signal_group

FINISHED = {"done", "failed"}
WAIT = 300.0  # seconds: the worker loads the model before its first photo


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    media_root: Path
    log: Path
    supervisor: Supervisor

    def kill_and_start_again(self) -> None:
        """SIGKILL the whole worker (main process and pool), then start it again as make run does."""
        signal_group(self.process, signal.SIGKILL)
        self.process.wait()
        self.supervisor.restart_exited()
        self.process = self.supervisor.children["worker"]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_for_photo(self, photo_id: str) -> Photo:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            photo = Photo.objects.get(pk=photo_id)
            if photo.status in FINISHED:
                return photo
            assert self.process.poll() is None, f"the worker died:\n{self.output()}"
            time.sleep(0.2)
        pytest.fail(f"photo {photo_id} is still {photo.status} after {WAIT:.0f} s; worker log:\n{self.output()}")


def database_url(db: dict[str, Any]) -> str:
    """A DATABASE_URL for the test database that this process created."""
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or ''}:{db.get('PORT') or 5432}/{db['NAME']}"
