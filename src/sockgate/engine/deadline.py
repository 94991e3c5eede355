"""A deadline that moves often and fires rarely, on one lazily re-armed timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """Moving the deadline is an attribute write: the loop's timer is armed anew only when the
    deadline comes sooner than the armed timer, or when the timer fires before the deadline it
    now holds (which then fires `callback`, once). Keep-alive and read deadlines move on every
    request and every chunk; creating and cancelling a timer each time would cost more than the
    rest of the request."""

    __slots__ = ("_callback", "_handle", "_handle_at", "_loop", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self.at: float | None = None  # loop time
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0

    def __repr__(self) -> str:
        return f"<Deadline at={self.at}>"

    def set(self, at: float | None) -> None:
        """The new deadline (None: none for now; the timer then fires and does nothing)."""
        self.at = at
        if at is not None and (self._handle is None or self._handle_at > at):
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(at, self._fire)
            self._handle_at = at

    def cancel(self) -> None:
        """No deadline, and no timer left holding on to the callback's owner."""
        self.at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Cancelled for good: the callback (and the owner it holds) let go, so the owner,
        which holds this deadline, is freed when its last reference goes, not by the GC."""
        self.cancel()
        self._callback = _nothing

    def _fire(self) -> None:
        self._handle = None
        at = self.at
        if at is None:
            return
        if self._loop.time() < at:
            self.set(at)  # moved later since the timer was armed
            return
        self.at = None
        self._callback()


def _nothing() -> None:
    pass
