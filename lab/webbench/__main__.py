from __future__ import annotations

from .benchmark import main

raise SystemExit(main())
