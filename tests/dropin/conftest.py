"""The drop-in tests reuse the serve tests' real-subprocess helpers (tests/serve/serve_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_SERVE = str(Path(__file__).resolve().parent.parent / "serve")
if _SERVE not in sys.path:
    sys.path.insert(0, _SERVE)
