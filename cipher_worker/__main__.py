"""``python -m cipher_worker``: see :mod:`cipher_worker.cli`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
