"""Hypothesis example counts.

The suite's one Hypothesis profile is registered (and loaded) in tests/conftest.py:
derandomized, no example database, no deadline. Each property keeps its own example count,
written `examples(n)`; `LLAMASWAP_HYPOTHESIS_EXAMPLES=N` replaces every count with N and turns
derandomization off, for a longer fuzzing session on a developer's machine (with
`--timeout=0`).
"""

from __future__ import annotations

import os

EXAMPLES_ENV = "LLAMASWAP_HYPOTHESIS_EXAMPLES"
OVERRIDE = int(os.environ.get(EXAMPLES_ENV) or 0)


def examples(n: int) -> int:
    """The example count of a property: `n`, unless the environment overrides it."""
    return OVERRIDE or n
