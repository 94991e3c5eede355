"""Per-app counters behind the status page, `status.json` and `sockgate status`. Pure.

Recording an exchange is O(1) with bounded memory, since it runs once per request on the hot
path: counters, a fixed-size ring of durations (the latency percentiles are taken from it when
someone asks, not per request) and a fixed-size ring of the most recent requests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

# Latency percentiles are over the last this many exchanges of an app (a power of two).
LATENCY_WINDOW: Final = 1024
# The most recent requests kept per app.
RECENT: Final = 10
# Longest request target kept in the ring of recent requests (a target may be 8 KiB).
TARGET_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class Recent:
    """One finished exchange as the dashboard lists it."""

    time: float  # when it ended (Unix time)
    method: str
    target: str  # as the client sent it, prefix included, cut at TARGET_MAX
    status: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LastError:
    time: float
    text: str


@dataclass(frozen=True, slots=True)
class AppSnapshot:
    """An app's counters at one moment, for rendering."""

    requests: int
    errors: int
    p50: float | None  # seconds; None before the first timed exchange
    p99: float | None
    upgrades: int  # open upgrade tunnels (WebSocket, ...)
    sse: int  # open Server-Sent Events responses
    last_error: LastError | None
    recent: tuple[Recent, ...]  # newest first


class AppStats:
    __slots__ = (
        "_durations",
        "_next",
        "_recent",
        "_timed",
        "errors",
        "last_error",
        "requests",
        "sse",
        "upgrades",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.upgrades = 0
        self.sse = 0
        self.last_error: LastError | None = None
        self._durations = [0.0] * LATENCY_WINDOW
        self._next = 0  # where the next duration goes
        self._timed = 0  # how many durations the ring holds
        self._recent: deque[tuple[float, bytes, bytes, int, float]] = deque(maxlen=RECENT)

    def __repr__(self) -> str:
        return f"<AppStats requests={self.requests} errors={self.errors}>"

    def record(
        self,
        now: float,
        method: bytes,
        target: bytes,
        status: int,
        seconds: float,
        stream: bool = False,
        fault: str | None = None,
    ) -> None:
        """One finished exchange. Errors are 5xx answers (the app's or sockgate's own pages) and
        exchanges sockgate had to cut (`fault`); streams (upgrades, SSE) stay out of latency."""
        self.requests += 1
        if status >= 500 or fault is not None:
            self.errors += 1
            request = f"{method.decode('latin-1')} {_cut(target)}"
            text = f"{fault} ({request})" if fault else f"{status} for {request}"
            self.last_error = LastError(now, text)
        if not stream:
            self._durations[self._next] = seconds
            self._next = (self._next + 1) & (LATENCY_WINDOW - 1)
            if self._timed < LATENCY_WINDOW:
                self._timed += 1
        self._recent.append((now, method, target, status, seconds))

    def snapshot(self) -> AppSnapshot:
        timed = sorted(self._durations[: self._timed])
        recent = tuple(
            Recent(t, m.decode("latin-1"), _cut(target), status, s)
            for t, m, target, status, s in reversed(self._recent)
        )
        return AppSnapshot(
            requests=self.requests,
            errors=self.errors,
            p50=percentile(timed, 50),
            p99=percentile(timed, 99),
            upgrades=self.upgrades,
            sse=self.sse,
            last_error=self.last_error,
            recent=recent,
        )


class Stats:
    """Counters by app name; an app unknown so far (a reload added it) gets its own on use."""

    def __init__(self, names: tuple[str, ...] | list[str] = ()) -> None:
        self.apps: dict[str, AppStats] = {name: AppStats() for name in names}

    def __repr__(self) -> str:
        return f"<Stats apps={sorted(self.apps)}>"

    def app(self, name: str) -> AppStats:
        found = self.apps.get(name)
        if found is None:
            found = self.apps[name] = AppStats()
        return found


def percentile(ordered: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _cut(target: bytes) -> str:
    text = target.decode("latin-1")
    return text if len(text) <= TARGET_MAX else text[: TARGET_MAX - 1] + "\u2026"
