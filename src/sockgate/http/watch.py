"""Which header names a parser looks at, and the cheap test its header callback makes first.

A policy that acts on a few header names hands the parser a watch list (`Watch`): the heads then
say whether any of them appeared, and heads without them pass untouched, without a loop.
"""

from __future__ import annotations

from typing import Final

# Header names a parser itself looks at (by length and first letter first: most headers are
# none of them): framing; in requests also Host, Expect and what the access log shows. Per kind,
# so that a response's Date or Server is not lowered to be compared with names only requests
# carry.
FRAMING_NAMES: Final = (b"transfer-encoding", b"content-length")
REQUEST_NAMES: Final = (*FRAMING_NAMES, b"host", b"expect", b"referer", b"user-agent")

# Header names a parser watches for, each with the one value that does not count (or None).
# A dict, not a Mapping: compiled, `in` and `[]` on a dict are direct calls, on a Mapping the
# generic protocol (three times the cost, for each header of every message).
Watch = dict[bytes, bytes | None]
# The names a parser looks at, as two bit sets: their lengths, and their first letters (bit
# `byte & 31`, the same for both cases). By length alone, most of a browser's headers (Accept,
# Sec-Fetch-*...) matched one. Bits of small ints: compiled, testing one is a shift and a mask
# (a set of ints costs a lookup, and one int object made for any key over 256).
Looks = tuple[int, int]

# Those for each watch list in use (a few module-level ones) and parser kind, kept with the list
# itself so that its id is not reused: a parser is made per connection.
_LOOKED_AT: Final[dict[tuple[int, tuple[bytes, ...]], tuple[Watch, Looks]]] = {}


def looked_at(watch: Watch, names: tuple[bytes, ...]) -> Looks:
    key = (id(watch), names)
    known = _LOOKED_AT.get(key)
    if known is not None:
        return known[1]
    lengths = letters = 0
    for name in (*names, *watch):
        lengths |= 1 << len(name)
        letters |= 1 << (name[0] & 31)
    if len(_LOOKED_AT) < 64:
        _LOOKED_AT[key] = (watch, (lengths, letters))
    return lengths, letters


NO_WATCH: Final[Watch] = {}
