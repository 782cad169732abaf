"""Suggest: the "did you mean" hint — the known name a user most likely meant.

One ladder for every pass (and the CLI), each step tried only when the ones before found
nothing, in the order below; the options say which steps a caller's names call for:
1. `fold`: the same name but for case and `_`/`-` separators (config keys: `logLevel`
   written `log_level`);
2. difflib's closest match at `cutoff`;
3. `partial`: a known name the word starts (or a known name of 3+ characters the word
   starts with), the closest in length, then difflib at the looser `LOOSE` cutoff (model
   and set names: `llama` for `llama-3.1-8b`).
Deterministic: the same word and names always give the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable

CUTOFF = 0.6
LOOSE = 0.5


def closest(
    word: str, known: Iterable[str], *, cutoff: float = CUTOFF, fold: bool = False, partial: bool = False
) -> str | None:
    """The known name closest to `word`, or None when nothing is close."""
    import difflib  # here, not at the top: only a misspelling needs it (serve's memory, start-up)

    pool = list(known)
    if fold:
        lower = {k.lower(): k for k in pool}
        if word.lower() in lower:
            return lower[word.lower()]
        bare = word.replace("_", "").replace("-", "").lower()
        for k in pool:
            if k.replace("_", "").lower() == bare:
                return k
    close = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    if close:
        return close[0]
    if partial:
        low = word.lower()
        prefixed = [
            p
            for p in pool
            if len(low) >= 3 and (p.lower().startswith(low) or (len(p) >= 3 and low.startswith(p.lower())))
        ]
        if prefixed:
            return min(prefixed, key=lambda p: (abs(len(p) - len(word)), p))
        close = difflib.get_close_matches(word, pool, n=1, cutoff=LOOSE)
        if close:
            return close[0]
    return None


def did_you_mean(
    word: str,
    known: Iterable[str],
    *,
    written: str = "{}",
    cutoff: float = CUTOFF,
    fold: bool = False,
    partial: bool = False,
) -> str | None:
    """The hint `did you mean 'x'?` for the closest known name, or None. `written` spells the
    name as the user would write it at that place ("+{}" for a set reference)."""
    guess = closest(word, known, cutoff=cutoff, fold=fold, partial=partial)
    return None if guess is None else f"did you mean '{written.format(guess)}'?"
