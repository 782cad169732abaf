"""Group: one swap group of the groups engine, as `load` checked it (reference §4).

Plain data: `load` builds the groups (every model in exactly one; models in no group go to
`DEFAULT_GROUP`), the Plan holds them and the group policy (`evict`) decides by them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GROUP = "(default)"  # holds every model no configured group names: swap, exclusive


@dataclass(frozen=True)
class Group:
    name: str
    swap: bool
    exclusive: bool
    persistent: bool
    members: tuple[str, ...]
