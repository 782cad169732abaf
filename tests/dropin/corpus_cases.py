"""The drop-in corpus: configs written the way people write them, each with what llama-swap
HEAD does with it, in its header comment:

    # llama-swap: starts                    or   # llama-swap: refuses: <its message>
    # ids: a, b, peer/c                     (starts: the IDs its /v1/models lists)
    # warns: LS408@12 LS410@5               (starts: warnings we must give, CODE@LINE)
    # error: LS315@10                       (refuses: an error we must give, CODE@LINE)

The expectations come from reading llama-swap's config loader (internal/config) and its
/v1/models handler, not from running llamaswap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Case:
    path: Path
    starts: bool
    message: str  # llama-swap's refusal message ("" when it starts)
    ids: tuple[str, ...]
    warns: tuple[tuple[str, int], ...]
    error: tuple[str, int] | None

    @property
    def name(self) -> str:
        return self.path.stem


def _at(item: str) -> tuple[str, int]:
    code, _, line = item.partition("@")
    return code, int(line)


def parse_case(path: Path) -> Case:
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*(llama-swap|ids|warns|error):\s?(.*)$", line)
        if m:
            header[m.group(1)] = m.group(2).strip()
    verdict = header["llama-swap"]
    starts = verdict == "starts"
    assert starts or verdict.startswith("refuses:"), f"{path.name}: bad verdict {verdict!r}"
    ids = tuple(i.strip() for i in header.get("ids", "").split(",") if i.strip())
    warns = tuple(_at(w) for w in header.get("warns", "").split())
    error = _at(header["error"]) if "error" in header else None
    assert starts or error is not None, f"{path.name}: a refused config names the error we give"
    return Case(path, starts, "" if starts else verdict.removeprefix("refuses:").strip(), ids, warns, error)


def cases() -> list[Case]:
    return [parse_case(p) for p in sorted(CORPUS.glob("*.yaml"))]
