"""The life of one exchange (one request and what answers it), written once: its phases and the
moves between them. Pure: no I/O, no protocol.

Every exchange ends in exactly one of three phases: COMPLETE (a whole response, or a tunnel that
ran to its end, reached the client), ANSWERED (sockgate answered itself: a redirect, an error
page, the status page; only ever before any byte of an app's response went out) or CUT (the
client connection was aborted or the client left: once a response has started, the only honest
signal of a failure left). `MOVES` is the table of what may follow what; `move()` refuses
anything else, so an exchange cannot, say, write an error page after the app's head went out.

Phases are small ints (a NewType): compiled with mypyc, a move is a tuple index and two bit
operations; an Enum member's hash is a call into Python.
"""

from __future__ import annotations

from typing import Final, NewType

Phase = NewType("Phase", int)

ROUTED: Final = Phase(0)  # the request has its decision; nothing went to an app yet
SENT: Final = Phase(1)  # the request is with the app (its head at least); no answer yet
RESPONDING: Final = Phase(2)  # the app's response started towards the client
TUNNEL: Final = Phase(3)  # upgraded: bytes flow both ways until one side ends
COMPLETE: Final = Phase(4)  # a whole response (or a whole tunnel) reached the client
ANSWERED: Final = Phase(5)  # sockgate's own answer; nothing of an app's response was sent
CUT: Final = Phase(6)  # aborted, or the client left: the client saw no proper end

NAMES: Final = ("ROUTED", "SENT", "RESPONDING", "TUNNEL", "COMPLETE", "ANSWERED", "CUT")

# What may follow each phase. SENT -> ROUTED: the app closed a reused connection without
# reading the request, which goes again on a new one. A phase never follows itself.
MOVES: Final[dict[Phase, frozenset[Phase]]] = {
    ROUTED: frozenset({SENT, ANSWERED, CUT}),
    SENT: frozenset({ROUTED, RESPONDING, TUNNEL, ANSWERED, CUT}),
    RESPONDING: frozenset({COMPLETE, CUT}),
    TUNNEL: frozenset({COMPLETE, CUT}),
    COMPLETE: frozenset(),
    ANSWERED: frozenset(),
    CUT: frozenset(),
}
ENDS: Final = frozenset(phase for phase, after in MOVES.items() if not after)

# The table as one bit set per phase, indexed by phase: bit `b` set when phase `b` may follow.
_ALLOWED: Final[tuple[int, ...]] = tuple(
    sum(1 << after for after in MOVES[Phase(phase)]) for phase in range(len(NAMES))
)


class IllegalMove(Exception):
    """A move the table does not allow: a bug in sockgate, never the client's or the app's."""


def move(phase: Phase, to: Phase) -> Phase:
    """`to`, if it may follow `phase`."""
    if not (_ALLOWED[phase] >> to) & 1:
        raise IllegalMove(f"an exchange cannot move from {NAMES[phase]} to {NAMES[to]}")
    return to


def ended(phase: Phase) -> bool:
    return phase >= COMPLETE


def app_answered(phase: Phase) -> bool:
    """Whether the client got (some of) an app's response: then no page of sockgate's may
    follow."""
    return RESPONDING <= phase <= COMPLETE


def name(phase: Phase) -> str:
    return NAMES[phase]
