"""RE2 (Go's regexp) patterns checked against, and run with, Python's re.

llama-swap compiles `upstream.ignorePaths` with Go's regexp, whose syntax is RE2's. Python's
re reads most of it the same way; where they part, `translate` either rewrites the pattern so
that Python matches what Go matches, or refuses it with the reason:

- refused (Go would refuse it, or Python would read it differently): look-around `(?=` `(?!`
  `(?<=` `(?<!`, back-references `\\1` `(?P=name)`, atomic groups `(?>`, conditionals `(?(`,
  comments `(?#`, possessive quantifiers `a*+`, Python's `\\Z`, `\\N{...}`, the `x` and `U`
  flags, POSIX classes `[[:alpha:]]` and Unicode classes `\\pL` (RE2 has them; Python's re
  does not);
- rewritten: RE2's `\\z` (end of text) and, without the `m` flag, `$` (which in RE2 matches
  only at the end of the text, where Python's would also match before a final newline)
  become Python's `\\Z`; Go's `(?<name>` becomes `(?P<name>`.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_POSSESSIVE = re.compile(r"\{\d+(?:,\d*)?\}\+")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?[:)]")
_GO_NAMED = re.compile(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>")
_REFUSED_GROUPS = (
    ("(?=", "look-ahead"),
    ("(?!", "negative look-ahead"),
    ("(?<=", "look-behind"),
    ("(?<!", "negative look-behind"),
    ("(?>", "atomic groups"),
    ("(?(", "conditional groups"),
    ("(?#", "comment groups"),
    ("(?P=", "back-references"),
)


@dataclass(frozen=True)
class Refused:
    """Why a pattern cannot be used, with the column (0-based) of the offending part."""

    reason: str
    column: int


def translate(pattern: str) -> str | Refused:
    """The Python pattern that matches what Go's regexp matches with `pattern`, or why not."""
    multiline = any("m" in (m.group(1) or "") for m in _FLAGS.finditer(pattern))
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            d = pattern[i + 1 : i + 2]
            if not in_class:
                if d.isdigit() and d != "0":
                    return Refused(f"back-references (\\{d}) are not RE2", i)
                if d == "Z":
                    return Refused("\\Z is not RE2 (write \\z for the end of the text)", i)
                if d == "z":
                    out.append("\\Z")
                    i += 2
                    continue
            if d == "N":
                return Refused("\\N{...} is not RE2", i)
            if d in ("p", "P"):
                return Refused(f"Unicode classes (\\{d}...) are RE2 but Python's re has none", i)
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                return Refused("POSIX classes ([:name:]) are RE2 but Python's re has none", i)
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):  # a leading ] is a literal
                j += 1
            out.append(pattern[i:j])
            i = j
            continue
        if c == "(" and pattern.startswith("(?", i):
            for opener, what in _REFUSED_GROUPS:
                if pattern.startswith(opener, i):
                    return Refused(f"{what} ({opener}...) are not RE2", i)
            named = _GO_NAMED.match(pattern, i)
            if named:
                out.append(f"(?P<{named.group(1)}>")
                i = named.end()
                continue
            flags = _FLAGS.match(pattern, i)
            if flags:
                letters = (flags.group(1) or "") + (flags.group(2) or "")
                bad = sorted(set(letters) - set("imsU")) or sorted(set(letters) & {"U"})
                if bad:
                    return Refused(
                        f"the flag {bad[0]!r} is not one both RE2 and Python read alike (i, m, s)", i
                    )
        if (c in "*+?" and pattern.startswith("+", i + 1)) or (c == "{" and _POSSESSIVE.match(pattern, i)):
            return Refused("possessive quantifiers (x*+, x++, x?+, x{n}+) are not RE2", i)
        if c == "$" and not multiline:
            out.append("\\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    python = "".join(out)
    try:
        re.compile(python)
    except re.error as exc:
        return Refused(f"Python's re cannot read it: {exc.msg}", exc.pos or 0)
    return python
