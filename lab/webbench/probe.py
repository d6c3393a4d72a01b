"""A measuring probe loaded only into the bench's Celery worker (``--include lab.webbench.probe``).

It times ``cipher_worker.api.anonymize_photo`` where the task really calls it, separating the
cipher's own time from the time spent in the task's progress callback (the row updates and
status pushes it does between stages, which are the web app's cost), and leaves both in the
bench's Redis database under ``veil:bench:probe:<photo id>`` once the task has finished, so
writing them is not part of what is measured. The task itself is unchanged.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

import torch
from celery.signals import task_postrun, task_prerun

from cipher_worker import api as cipher_api
from cipher_worker.pipeline import AnonymizedPhoto, Progress

from .world import probe_key

TASK = "albums.anonymize_photo"
TTL = 3600
_current = threading.local()
_anonymize = cipher_api.anonymize_photo


@functools.wraps(_anonymize)
def _timed_anonymize(
    data: bytes, album_public: bytes, *, progress: Progress | None = None, **kw: Any
) -> AnonymizedPhoto:
    in_callback = 0.0

    def timed_progress(stage: str, fraction: float) -> None:
        nonlocal in_callback
        start = time.perf_counter()
        try:
            if progress is not None:
                progress(stage, fraction)
        finally:
            in_callback += time.perf_counter() - start

    start = time.perf_counter()
    result = _anonymize(data, album_public, progress=timed_progress, **kw)
    wall = time.perf_counter() - start
    _current.record = {
        "cipher_end_epoch": time.time(),  # the bench compares it with the arrival of "done"
        "cipher_s": wall - in_callback,
        "progress_callbacks_s": in_callback,
        "torch_threads": torch.get_num_threads(),
        **{f"stage {name}": seconds for name, seconds in result.timings.items()},
    }
    return result


cipher_api.anonymize_photo = _timed_anonymize


@task_prerun.connect
def _task_started(task: Any = None, args: Any = None, **_: Any) -> None:
    _current.record = None


@task_postrun.connect
def _task_finished(task: Any = None, args: Any = None, **_: Any) -> None:
    record = getattr(_current, "record", None)
    if task is None or task.name != TASK or not args or record is None:
        return
    from webapp.albums import transit

    transit.client().set(probe_key(str(args[0])), json.dumps(record), ex=TTL)
