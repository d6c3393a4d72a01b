"""The sentences a person reads when a photo cannot be anonymized or shown, in one place.

An upload's sentence is stored as its ``failure_reason`` and shown on its tile; an unlock's is
sent to the page for the photo it could not bring back.
"""

from __future__ import annotations

OUR_FAULT = "Something went wrong on our side; please try again."
TEMPORARILY_UNAVAILABLE = (
    "Veil is restarting one of its parts and cannot answer right now. Your photos are safe; "
    "please try again in a minute."
)

# anonymizing an upload
UPLOAD_EXPIRED = "The upload expired before a worker got to it; please upload it again."
UPLOAD_LOST = (
    "The upload was lost before a worker finished it (Veil was restarted, or it waited too long); "
    "please upload it again."
)
WRONG_TRANSIT_KEY = "This upload was sealed for other workers and cannot be opened here; please upload it again."
WORKER_LOST = "The worker stopped while anonymizing this photo; it can be tried again."
KEY_ROTATED = "The album's key was rotated while this photo was being anonymized; it can be tried again."

# showing a photo's real faces
UNLOCK_WAITED_TOO_LONG = "This photo waited too long for a free worker; press “Show real faces” again."
PHOTO_GONE = "This photo is no longer in the album."
NO_WORKER = (
    "No worker is running to recover photos just now, so this one cannot be shown; your photos are safe. "
    "Press “Show real faces” again in a few minutes."
)
NO_WORKER_YET = "No worker is running just now: new photos wait, safe, and are anonymized as soon as one starts."
MODEL_CHANGED = (
    "This photo was made with a face model this site no longer runs, so its faces cannot be shown; "
    "the site's staff can restore that model."
)
# Too many of one client's password checks wait for a turn at the cores (cipher_worker.turns).
BUSY = "Veil is very busy right now; please try again in a moment."
