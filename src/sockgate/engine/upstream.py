"""Connections to apps: connect with named faults, a keep-alive pool per app socket."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from enum import Enum, auto
from typing import Final

from .. import errors
from ..config import App
from ..http.events import Event
from ..http.headers import RESPONSE_WATCH
from ..http.parse import ResponseParser
from .faults import diagnose
from .stream import Stream

# Idle app connections kept per app; more are closed when released. As many as a busy client
# side may use at once, so a burst does not pay a connect (and a close) per request.
MAX_IDLE: Final = 256
# A request that cannot be retried (it has a body, or is not idempotent) takes a pooled
# connection only if it went idle this recently: apps close idle connections after a few seconds
# (gunicorn: 2 s) and a close that crosses our request on the wire cannot be told apart from a
# crash.
FRESH_ENOUGH: Final = 1.0
# Connect retries while holding a request for an app that is restarting: soon at first, then at
# most this far apart, so a request goes through within a tenth of a second of the app's return.
HOLD_FIRST_RETRY: Final = 0.01
HOLD_MAX_RETRY: Final = 0.1

log = logging.getLogger(__name__)
# Compiled, a Final is a C static: no lookup of `monotonic` on the time module at each call.
_monotonic: Final = time.monotonic


class ConnState(Enum):
    ACTIVE = auto()  # carrying an exchange
    IDLE = auto()  # in the pool
    CLOSED = auto()


class AppConnection:
    """One connection to an app: its stream and the parser for what the app sends back."""

    def __init__(
        self,
        stream: Stream,
        reused: bool = False,
        active: set[AppConnection] | None = None,
        pool: Upstream | None = None,
    ) -> None:
        self.stream = stream
        self.pool = pool  # where `release()` puts it back (none: it is closed instead)
        self.parser = ResponseParser(watch=RESPONSE_WATCH)
        self.state = ConnState.ACTIVE
        self.reused = reused
        self.idle_since = 0.0
        self.received = 0  # bytes of the current response so far
        # The pool's set of connections under way, which this one leaves when it closes.
        self._active = active
        # Cut by sockgate (a reload retired its app): the end of stream is no fault of the app.
        self.cut_off = False
        # What else to close when the connection is cut (the client side of a tunnel).
        self.on_cut: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<AppConnection {self.state.name} reused={self.reused} {self.stream!r}>"

    async def next_event(self, deadline: float | None = None) -> Event | None:
        """The next response event, or None when the app closed the connection. TimeoutError
        when the app sent nothing by `deadline`."""
        parser = self.parser
        while not parser.events:
            data = await self.stream.read(deadline)
            if not data:
                return None
            self.received += len(data)
            parser.feed(data)
        return parser.events.popleft()

    @property
    def active(self) -> bool:
        """Carrying an exchange: neither closed nor back in the pool."""
        return self.state is ConnState.ACTIVE

    def send(self, data: bytes) -> None:
        self.stream.write(data)

    def send_parts(self, parts: list[bytes]) -> None:
        self.stream.writelines(parts)

    async def drain(self, deadline: float) -> None:
        await self.stream.drain(deadline)

    def release(self) -> None:
        """Back to its pool after a complete exchange (closed if it cannot be reused)."""
        if self.pool is None:
            self.close()
        else:
            self.pool.release(self)

    def close(self) -> None:
        self.state = ConnState.CLOSED
        if self._active is not None:
            self._active.discard(self)
        self.stream.abort()
        self.parser.close()  # no cycle left for the GC; its events stay readable

    def cut(self) -> None:
        """End the exchange or tunnel under way: its app was retired by a reload."""
        self.cut_off = True
        hook, self.on_cut = self.on_cut, None
        self.close()
        if hook is not None:
            hook()


class Upstream:
    """The pool for one app socket, and the registry of its connections under way (so that a
    reload that retires the app can end them at the drain deadline)."""

    def __init__(self, app: App, connect_timeout: float) -> None:
        self.app = app
        self.connect_timeout = connect_timeout
        self.retired = False
        self._idle: deque[AppConnection] = deque()
        self._holding = False  # requests wait for the app to come back (logged once)
        # Whether the app's socket has answered since sockgate started (or sockgate runs the
        # app): only then is a socket that is missing or refuses an app that restarts, worth
        # holding requests for. Before, it may as well be a typo: answered at once.
        self.answered = app.command is not None
        self._active: set[AppConnection] = set()

    def __repr__(self) -> str:
        state = " retired" if self.retired else ""
        return (
            f"<Upstream {self.app.name}{state} idle={len(self._idle)} active={len(self._active)}>"
        )

    @property
    def active(self) -> int:
        """Connections carrying an exchange or a tunnel now."""
        return len(self._active)

    async def acquire(self, *, retryable: bool, fresh: bool = False) -> AppConnection:
        """A usable pooled connection unless `fresh` is asked; else a new one."""
        conn = None if fresh else self.take_idle(retryable=retryable)
        if conn is None:
            conn = AppConnection(await self.connect(), active=self._active, pool=self)
            self._active.add(conn)
        return conn

    def take_idle(self, *, retryable: bool) -> AppConnection | None:
        """A usable pooled connection, or None when a new one must be made."""
        while self._idle:
            conn = self._idle.pop()  # the most recently used is the least likely to be closed
            stream = conn.stream
            if stream.closed or stream.at_eof or stream.has_buffered:
                conn.close()
                continue
            if not retryable and _monotonic() - conn.idle_since > FRESH_ENOUGH:
                conn.close()
                continue
            stream.idle = False
            conn.state = ConnState.ACTIVE
            conn.reused = True
            conn.received = 0
            conn.parser.head_request = False  # llhttp reads one response after another
            self._active.add(conn)
            return conn
        return None

    def release(self, conn: AppConnection) -> None:
        """Back to the pool after a complete exchange on a connection the app keeps open."""
        self._active.discard(conn)
        if (
            self.retired
            or conn.stream.closed
            or conn.stream.has_buffered
            or not conn.parser.idle
            or len(self._idle) >= MAX_IDLE
        ):
            conn.close()
            return
        conn.state = ConnState.IDLE
        conn.idle_since = _monotonic()
        conn.stream.idle = True
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def retire(self) -> None:
        """A reload removed this app or moved its socket: no new exchanges, idle connections
        closed now; those under way finish or are `cut()` at the drain deadline."""
        self.retired = True
        self.close()

    def cut(self) -> int:
        """End every exchange and tunnel still under way; returns how many."""
        under_way = list(self._active)
        for conn in under_way:
            conn.cut()
        return len(under_way)

    async def connect(self, *, hold: bool = True) -> Stream:
        """A new connection. While the app's socket is missing or refuses connections (the app
        is restarting), tried again until the app's `hold` has passed (unless not `hold`, or
        the app has never answered: see `answered`)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (self.app.hold if hold and self.answered else 0.0)
        delay = HOLD_FIRST_RETRY
        while True:
            failed: errors.UpstreamError | None = None
            try:
                stream = await self._connect_once()
            except errors.UpstreamError as exc:
                failed = exc
            if failed is None:
                self.answered = True
                if self._holding:
                    self._holding = False
                    log.info("%s: back", self.app.name)
                return stream
            if isinstance(failed, errors.ConnectReset) and not self.answered:
                # A listener took the connection into its queue, then stopped: an app was
                # there since sockgate started, and is restarting. Held like one that answered.
                self.answered = True
                until = loop.time() + (self.app.hold if hold else 0.0)
            # Waited for outside the except block: compiled with mypyc, a coroutine that awaits
            # while it handles an exception leaks that exception to other tasks (hatch_build.py).
            left = until - loop.time()
            if not failed.restarting or left <= 0:
                raise failed
            if not self._holding:
                self._holding = True
                log.info("%s; holding requests for up to %gs", failed, self.app.hold)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, HOLD_MAX_RETRY)

    async def _connect_once(self) -> Stream:
        path = str(self.app.socket)
        loop = asyncio.get_running_loop()
        busy = False
        delay = 0.001
        try:
            async with asyncio.timeout(self.connect_timeout):
                while True:
                    try:
                        _, stream = await loop.create_unix_connection(Stream, path)
                        stream.salvage = True
                        return stream
                    except BlockingIOError:
                        # EAGAIN on a Unix socket: the app's listen queue is full. It is alive
                        # but busy, so try again (with backoff) until the connect timeout.
                        busy = True
                    await asyncio.sleep(delay)  # not in the except block: see connect()
                    delay = min(delay * 2, 0.05)
        except TimeoutError:
            detail = (
                "its listen queue stayed full" if busy else "no answer"
            ) + f" for {self.connect_timeout:g}s"
            raise errors.ConnectTimeout(self.app.name, path, detail) from None
        except OSError as exc:
            raise diagnose(self.app, exc) from None
