"""The exchange's phases and the moves between them: the table, and what it rules out."""

from __future__ import annotations

import itertools

import pytest

from sockgate.exchange import phase
from sockgate.exchange.phase import (
    ANSWERED,
    COMPLETE,
    CUT,
    ENDS,
    MOVES,
    RESPONDING,
    ROUTED,
    SENT,
    TUNNEL,
    IllegalMove,
    Phase,
    move,
)

ALL = [Phase(p) for p in range(len(phase.NAMES))]


@pytest.mark.parametrize(("src", "to"), list(itertools.product(ALL, ALL)))
def test_move_follows_the_table_for_every_pair(src: Phase, to: Phase) -> None:
    if to in MOVES[src]:
        assert move(src, to) == to
    else:
        with pytest.raises(IllegalMove, match=f"from {phase.name(src)} to {phase.name(to)}"):
            move(src, to)


def test_the_table_names_every_phase_once() -> None:
    assert sorted(MOVES) == ALL
    assert len(set(phase.NAMES)) == len(ALL)


def test_every_exchange_ends_in_exactly_one_of_three_ways() -> None:
    assert {COMPLETE, ANSWERED, CUT} == ENDS
    assert all(phase.ended(p) == (p in ENDS) for p in ALL)
    # From every phase an end can be reached, and no end leads anywhere.
    for start in ALL:
        seen, todo = {start}, [start]
        while todo:
            for after in MOVES[todo.pop()]:
                if after not in seen:
                    seen.add(after)
                    todo.append(after)
        assert seen & ENDS, phase.name(start)


def reachable_from(start: Phase) -> set[Phase]:
    seen, todo = set(), [start]
    while todo:
        for after in MOVES[todo.pop()]:
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return seen


def test_no_page_of_sockgates_after_an_apps_response_started() -> None:
    """Once any byte of the app's response went to the client, sockgate cannot answer with a
    page of its own: the only way left to report a failure is to cut the connection."""
    for started in (RESPONDING, TUNNEL):
        assert ANSWERED not in reachable_from(started)
        assert CUT in MOVES[started]
    assert phase.app_answered(RESPONDING)
    assert phase.app_answered(TUNNEL)
    assert not phase.app_answered(SENT)
    assert not phase.app_answered(ANSWERED)


def test_a_request_goes_again_only_before_any_answer() -> None:
    """The retry on a new app connection (an app that closed a reused connection unread) is the
    only move back, and only from SENT."""
    backwards = [(src, to) for src in ALL for to in MOVES[src] if to < src]
    assert backwards == [(SENT, ROUTED)]


def test_an_upgrade_needs_the_request_to_have_reached_the_app() -> None:
    assert [src for src in ALL if TUNNEL in MOVES[src]] == [SENT]
