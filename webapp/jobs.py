"""What the web process puts on the Celery queues, by task name.

The tasks themselves (:mod:`webapp.albums.tasks`, :mod:`webapp.sharing.tasks`) run the model and
import torch; the web process only ever names them, so it never loads either. Which queue a
task goes to is ``CELERY_TASK_ROUTES`` in the settings.
"""

from __future__ import annotations

import uuid

from webapp.celery import app

ANONYMIZE_PHOTO = "albums.anonymize_photo"
RECOVER_PHOTO = "sharing.recover_photo"


def queue_anonymization(photo_id: uuid.UUID | str) -> None:
    app.send_task(ANONYMIZE_PHOTO, args=[str(photo_id)])


def queue_recovery(photo_id: str, transit_id: str, reply_channel: str, session_id: str) -> None:
    app.send_task(RECOVER_PHOTO, args=[photo_id, transit_id, reply_channel, session_id])
