"""Share links are capabilities: whoever reads one in a log can open the album. Every log line
that names a share page, its files or its websocket has the token cut out."""

from __future__ import annotations

import logging
import re

_SHARE_PATH = re.compile(r"/(s|ws/share)/[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    return _SHARE_PATH.sub(r"/\1/…", text)


class RedactShareLinks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
