"""One client connection: read requests, route them, forward, stream back, upgrade.

Every exchange ends in exactly one of: a complete response, a page sockgate writes itself
(before any byte of the app's response), or a closed client connection (after it started).

Two paths share this work. The common exchange (a request without a body, forwarded on a pooled
app connection, answered with a complete response in what the app has sent so far) runs in the
transports' callbacks while the connection's task stays parked: no task wakes up for it. Anything
else (bodies, upgrades, new app connections, streaming, 1xx, faults, timeouts) wakes the task,
which takes over from the state the callbacks left: the parsers' queued events and the streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from .. import errors
from ..addresses import is_loopback
from ..config import App
from ..http import headers, http1, pages, routing
from ..http.http1 import (
    END,
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    Framing,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgrade,
)
from ..http.routing import Forward
from ..status import monitor
from . import tunnel
from .deadline import Deadline
from .shared import Engine
from .stream import Stream
from .upstream import AppConnection, ConnState, Upstream

log = logging.getLogger(__name__)

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# nginx logs an exchange the client abandoned as 499.
CLIENT_CLOSED: Final = 499
# A browser navigating to an app that is down gets a page that loads itself again this often.
RETRY_PAGE_STATUS: Final = 503
RETRY_EVERY: Final = 2
# Compiled, a Final is a C static: no lookup of `time` on the time module at each call.
_wall_time: Final = time.time


class ClientState(Enum):
    WAITING = auto()  # for a request head
    ACTIVE = auto()  # an exchange is under way
    TUNNEL = auto()  # upgraded: bytes flow both ways
    EVENTS = auto()  # sockgate's own status event stream: ends at once on shutdown
    CLOSED = auto()


class _Wake(Enum):
    """Why a parked connection task wakes up."""

    EVENTS = auto()  # the request parser holds a request the callbacks do not handle
    EOF = auto()  # the client closed (or the connection is gone) between requests
    TIMEOUT = auto()  # no request (head) in time
    CLOSE = auto()  # a fast exchange finished and the connection does not carry another
    DRAIN = auto()  # responses wait for the client to read them before the next request


# A fast exchange the task must finish: returns whether the connection carries another request.
_Resume = Callable[[], Awaitable[bool]]


@dataclass(slots=True, init=False)  # its own __init__, compiled: see http1.RequestHead
class _Exchange:
    head: RequestHead
    started: float
    app: App | None
    upstream: Upstream | None
    conn: AppConnection | None
    request: bytes
    # A body the fast path streams: the response, and the bytes of it still to come.
    response: ResponseHead | None
    remaining: int
    keep: bool
    status: int
    sent: int
    pump_error: errors.SockgateError | None
    body_done: bool
    client_left: bool
    head_sent: bool
    # For the status counters: a long-lived stream (kept out of latency), the fault that ended it.
    stream: bool
    fault: str | None

    def __init__(
        self,
        head: RequestHead,
        *,
        app: App | None = None,
        upstream: Upstream | None = None,
        conn: AppConnection | None = None,
        body_done: bool = False,
    ) -> None:
        self.head = head
        self.started = _wall_time()
        self.app = app
        self.upstream = upstream
        self.conn = conn
        self.request = b""
        self.response = None
        self.remaining = 0
        self.keep = False
        self.status = 0
        self.sent = 0
        self.pump_error = None
        self.body_done = body_done
        self.client_left = False
        self.head_sent = False
        self.stream = False
        self.fault = None


class _Retry(Exception):
    """The app closed a reused connection before reading our request: send it again."""


class ClientConnection:
    def __init__(self, stream: Stream, engine: Engine, peer: object = None) -> None:
        """`peer`: the client's address as accept() gave it (else asked of the stream)."""
        self.stream = stream
        self.engine = engine
        self.timeouts = engine.config.timeouts
        self.parser = http1.RequestParser(watch=headers.REQUEST_WATCH)
        self.loop = stream.loop
        # Bound once: a call through it skips the method lookup on the loop (not compiled).
        self._clock: Callable[[], float] = self.loop.time
        self.state = ClientState.WAITING
        self.closing = False
        self._tunnel: AppConnection | None = None
        # The fast path: the parked task's wake-up, the exchange under way in callbacks, and one
        # lazily re-armed timer for the deadline in force (next head, or the app's answer).
        self._wake: asyncio.Future[_Wake | _Resume] | None = None
        self._fast: _Exchange | None = None
        # Handed to the task but not resumed yet: closed and logged if the task is cancelled.
        self._handed: _Exchange | None = None
        self._head_started = False
        self._deadline = Deadline(self.loop, self._on_deadline)
        # The streams' callbacks of every fast exchange, bound once (binding a method is an
        # allocation); let go when the connection ends (`run`), as the deadline's callback is.
        self._bound_client_data: Callable[[bytes], None] | None = self._on_client_data
        self._bound_client_eof: Callable[[], None] | None = self._on_client_eof
        self._bound_client_eof_fast: Callable[[], None] | None = self._on_client_eof_fast
        self._bound_app_data: Callable[[bytes], None] | None = self._on_app_data
        self._bound_app_eof: Callable[[], None] | None = self._on_app_eof
        if peer is None:
            peer = stream.peer()
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"

    def __repr__(self) -> str:
        return f"<ClientConnection {self.client_ip} {self.state.name}>"

    async def run(self) -> None:
        try:
            first = True
            while True:
                if self._fast is None:
                    if self.closing:
                        return
                    self.state = ClientState.WAITING
                got = await self._next_request(first)
                if got is None:
                    return
                first = False
                self.state = ClientState.ACTIVE
                keep = await (self._exchange(got) if isinstance(got, RequestHead) else got())
                if keep is None:
                    continue  # the exchange goes on in callbacks; the task parks meanwhile
                # Finished (a cut exchange aborted the stream itself): what is still buffered
                # for the client must go out, so the close below is a graceful one.
                self.state = ClientState.WAITING
                if not keep:
                    return
        except (OSError, errors.ClientGone) as exc:
            log.debug("client %s gone: %s", self.client_ip, exc)
        except errors.SockgateError as exc:
            log.warning("client %s: exchange ended: %s", self.client_ip, exc)
        finally:
            self._deadline.close()
            self.parser.close()
            self._bound_client_data = self._bound_client_eof = self._bound_client_eof_fast = None
            self._bound_app_data = self._bound_app_eof = None
            owed = self._fast or self._handed
            if owed is not None:  # cancelled (the shutdown deadline) mid fast exchange
                if owed is self._fast:
                    self._end_fast(owed)
                self._handed = None
                assert owed.conn is not None
                owed.conn.close()
                self._log(owed)
            # Cut mid-exchange (the shutdown deadline, an error): a reset, never a FIN that a
            # close-delimited response would read as its proper end.
            if self.state is ClientState.ACTIVE:
                self.stream.abort()
            else:
                self.stream.close()
            self.state = ClientState.CLOSED

    def reconfigured(self) -> None:
        """A reload replaced the engine's config: its timeouts apply from the next wait on
        (routes, limits and hosts are read from the engine for each request anyway)."""
        self.timeouts = self.engine.config.timeouts

    def shutdown(self) -> None:
        """Stop after what is under way: now if idle or tunnelling, else after the exchange."""
        self.closing = True
        if self.state in (ClientState.WAITING, ClientState.TUNNEL, ClientState.EVENTS):
            self.stream.abort()
        if self._tunnel is not None:
            self._tunnel.close()

    # --- reading from the client
    async def _next_event(self, deadline: float | None = None) -> Event | None:
        parser = self.parser
        while not parser.events:
            data = await self.stream.read(deadline)
            if not data:
                return None
            parser.feed(data)
        return parser.events.popleft()

    async def _next_request(self, first: bool) -> RequestHead | _Resume | None:
        """The next request for the task, or an exchange to finish; None to close."""
        parser = self.parser
        while self._fast is not None or not parser.events:
            wake = await self._park(first)
            if wake is _Wake.DRAIN:
                await self._drain_client()
                continue
            if wake is _Wake.TIMEOUT:
                if self._head_started:
                    error = errors.ClientTimeout("the request head did not arrive in time")
                    self._refuse(error, None)
                return None
            if wake is _Wake.EOF or wake is _Wake.CLOSE:
                return None
            if wake is not _Wake.EVENTS:
                assert callable(wake), wake
                return wake
            break
        # A client that sends requests without reading the answers is not served more of them
        # than it reads (pipelining): the next one waits until it has caught up.
        if self.stream.writing_paused:
            await self._drain_client()
        event = parser.events.popleft()
        if isinstance(event, ProtocolError):
            self._refuse(event.error, None)
            return None
        assert isinstance(event, RequestHead), event
        return event

    # --- the fast path: exchanges in callbacks while the task is parked
    async def _park(self, first: bool) -> _Wake | _Resume:
        wake: asyncio.Future[_Wake | _Resume] = self.loop.create_future()
        self._wake = wake
        if self._fast is None:  # else the exchange under way takes the next request itself
            t = self.timeouts
            self._head_started = self.parser.started
            wait = t.client_header if first or self._head_started else t.keepalive
            self._deadline.set(self._clock() + wait)
            self._pump_client()
        try:
            return await wake
        finally:
            self._wake = None
            self.stream.on_data = None
            if self.stream.on_eof is self._bound_client_eof:
                self.stream.on_eof = None
            self._deadline.set(None)

    def _pump_client(self) -> None:
        """Between exchanges: start what the client already sent, or listen for more."""
        stream, parser = self.stream, self.parser
        while not parser.events and stream.has_buffered:
            self._on_client_data(stream.take(), listening=False)
        if parser.events:
            self._dispatch()
        elif stream.peer_closed:
            self._wake_task(_Wake.EOF)
        else:
            stream.on_data = self._bound_client_data
            stream.on_eof = self._bound_client_eof

    def _on_client_data(self, data: bytes, listening: bool = True) -> None:
        parser = self.parser
        parser.feed(data)
        if parser.events:
            if listening:
                self._dispatch()
        elif not self._head_started:
            self._head_started = True
            self._deadline.set(self._clock() + self.timeouts.client_header)

    def _on_client_eof(self) -> None:
        self._wake_task(_Wake.EOF)

    async def _drain_client(self) -> None:
        """Until the client has read what was sent to it, for up to the send timeout."""
        try:
            await self.stream.drain(self._clock() + self.timeouts.send)
        except TimeoutError:
            self.stream.abort()  # what it did not read is dropped with it
            raise errors.ClientGone("client stopped reading the responses") from None

    def _dispatch(self) -> None:
        """Start the request at the front of the parser's queue in callbacks if it is a common
        one and a pooled app connection is at hand; else wake the task for it."""
        events = self.parser.events
        head = events[0]
        if (
            type(head) is RequestHead
            and len(events) > 1
            and head.framing is Framing.NONE
            and not head.upgrade
            and not self.closing
            and not self.stream.writing_paused
            and self.engine.hosts.allows(head.host)
        ):
            route = self.engine.router.route(head.target)
            # An app started on demand counts its exchanges (see _forward_supervised).
            if type(route) is Forward and not _on_demand(app := route.app):
                upstream = self.engine.upstream(app)
                conn = upstream.take_idle(retryable=head.method in IDEMPOTENT)
                if conn is not None:
                    events.popleft()
                    self._skip_end_of_request()
                    ex = _Exchange(head, app=app, upstream=upstream, conn=conn, body_done=True)
                    ex.request = self._app_request(head, route)
                    self.state = ClientState.ACTIVE
                    if not self._launch(ex):
                        self._handed = ex
                        self._wake_task(functools.partial(self._resume, ex, False, None))
                    return
        self._wake_task(_Wake.EVENTS)

    def _launch(self, ex: _Exchange) -> bool:
        """Send the request and wait for the response in callbacks; False if the app
        connection turned out closed (the task then deals with it)."""
        conn = ex.conn
        assert conn is not None
        self._fast = ex
        self.stream.on_data = None  # what the client sends next waits in the stream's buffer
        self.stream.on_eof = self._bound_client_eof_fast
        conn.parser.head_request = ex.head.method == b"HEAD"
        try:
            conn.stream.write(ex.request)
        except ConnectionError:
            self._end_fast(ex)
            return False
        conn.stream.on_data = self._bound_app_data
        conn.stream.on_eof = self._bound_app_eof
        self._deadline.set(self._clock() + self.timeouts.read)
        return True

    def _on_client_eof_fast(self) -> None:
        ex = self._fast
        if ex is not None and ex.conn is not None:
            self._client_eof(ex, ex.conn)

    def _on_app_data(self, data: bytes) -> None:
        ex = self._fast
        assert ex is not None
        conn = ex.conn
        assert conn is not None
        conn.received += len(data)
        parser = conn.parser
        whole = not parser.started  # if this read ends it, it holds the whole response
        parser.feed(data)
        events = parser.events
        if not events:
            return  # the head is not complete yet
        response = events[0]
        if type(response) is ResponseHead and not response.informational and response.status != 101:
            # What follows the end (bytes the app should not have sent) stays queued: the
            # connection is then not reused (`_release`).
            if events[-1] is END and len(events) <= 3:
                self._finish_fast(ex, response, data if whole else None)
                return
            if any(type(event) is EndOfMessage for event in events):
                self._finish_fast(ex, response)
                return
            if response.framing is Framing.LENGTH and all(
                type(events[i]) is Data for i in range(1, len(events))
            ):
                self._stream_fast(ex, response)
                return
        self._hand_off(ex, written=True)  # chunked or to the close, 1xx, or something to report

    def _on_app_eof(self) -> None:
        ex = self._fast
        if ex is None:
            return
        if not ex.head_sent:
            self._hand_off(ex, written=True)
        elif ex.conn is not None and ex.conn.cut_off:
            assert ex.app is not None
            self._cut(ex, _retired(ex.app.name, str(ex.app.socket)))
        elif ex.client_left:
            self._cut(ex, errors.ClientGone("client closed the connection"))
        else:
            assert ex.app is not None
            reason = "the body was incomplete"
            self._cut(ex, errors.AppCutShort(ex.app.name, str(ex.app.socket), reason))

    def _stream_fast(self, ex: _Exchange, response: ResponseHead) -> None:
        """A body of known length, longer than what has arrived: relayed as it comes, past
        the parser (no copy, no event per chunk), with backpressure both ways."""
        conn = ex.conn
        assert conn is not None
        events = conn.parser.events
        events.popleft()
        _, ex.keep, pending = self._plan_response(ex, response)
        got = 0
        while events:
            event = events.popleft()
            assert type(event) is Data, event  # _on_app_data saw only Data after the head
            got += len(event.data)
            pending.append(event.data)
        ex.sent += got
        ex.remaining = (response.content_length or 0) - got
        ex.response = response
        # The parser stays behind mid-body: the next response on this connection starts fresh.
        conn.parser.close()
        conn.parser = http1.ResponseParser(watch=headers.RESPONSE_WATCH)
        conn.stream.relay(self._on_app_body)
        self.stream.on_drained = self._on_client_drained
        self._relay_body(ex, pending)

    def _on_app_body(self, data: memoryview) -> bool:
        """The next bytes of the body, in the app stream's buffer (`Stream.relay`); True when
        they are still queued for the client after this (the buffer is then not reused)."""
        ex = self._fast
        assert ex is not None
        conn = ex.conn
        assert conn is not None
        size = len(data)
        conn.received += size
        if size > ex.remaining:
            # More than Content-Length said: the rest is no response; the connection ends.
            conn.parser.dead = True
            data = data[: ex.remaining]
            size = ex.remaining
        ex.remaining -= size
        ex.sent += size
        self._relay_body(ex, [data])
        return self.stream.unsent > 0

    def _relay_body(self, ex: _Exchange, parts: list[bytes] | list[memoryview]) -> None:
        conn = ex.conn
        assert conn is not None
        try:
            self.stream.writelines(parts)
        except ConnectionError as exc:
            self._cut(ex, exc)
            return
        ex.head_sent = True
        if ex.remaining == 0:
            assert ex.response is not None
            self._complete_fast(ex, ex.response, ex.keep)
        elif self.stream.writing_paused:
            conn.stream.hold(True)
            self._deadline.set(self._clock() + self.timeouts.send)
        else:
            self._deadline.set(self._clock() + self.timeouts.read)

    def _on_client_drained(self) -> None:
        ex = self._fast
        if ex is not None and ex.conn is not None:
            ex.conn.stream.hold(False)
            self._deadline.set(self._clock() + self.timeouts.read)

    def _cut(self, ex: _Exchange, error: BaseException) -> None:
        """End a fast exchange whose head is out: without finishing, so the client sees it."""
        assert ex.conn is not None
        ex.conn.close()
        self._end_fast(ex)
        self._note_fault(ex, error)
        self.stream.abort()
        self._log(ex)
        self._wake_task(_Wake.CLOSE)

    def _finish_fast(
        self, ex: _Exchange, response: ResponseHead, whole: bytes | None = None
    ) -> None:
        """The whole response is parsed: send it in one write and take the next request.
        `whole`: the read that held exactly this response, passed on as it is if it may be."""
        conn = ex.conn
        assert conn is not None
        events = conn.parser.events
        if whole is not None and self._passes_unchanged(ex, response, whole):
            events.clear()
            try:
                self.stream.write(whole)
            except ConnectionError as exc:
                self._cut(ex, exc)
                return
            ex.status = response.status
            ex.sent = response.content_length or 0
            ex.head_sent = True
            self._complete_fast(ex, response, True)
            return
        events.popleft()
        framing, keep, pending = self._plan_response(ex, response)
        chunked = framing is Framing.CHUNKED
        while type(event := events.popleft()) is Data:
            data = event.data
            ex.sent += len(data)
            if chunked:
                pending += (http1.chunk_header(len(data)), data, b"\r\n")
            else:
                pending.append(data)
        if chunked:
            pending.append(LAST_CHUNK)
        try:
            self.stream.writelines(pending)
        except ConnectionError as exc:
            self._cut(ex, exc)
            return
        ex.head_sent = True
        self._complete_fast(ex, response, keep)

    def _passes_unchanged(self, ex: _Exchange, response: ResponseHead, whole: bytes) -> bool:
        """The app's bytes are what _plan_response and the header policy would send: a
        Content-Length response, nothing after it, to a kept-alive HTTP/1.1 request."""
        length = response.content_length
        return (
            response.framing is Framing.LENGTH
            and length is not None
            and ex.head.version == b"1.1"
            and self._keeps_client(ex, Framing.LENGTH)
            and response.keep_alive
            and whole.startswith(b"HTTP/1.1 ")
            # llhttp has checked the head, so its first blank line is its end.
            and whole.find(b"\r\n\r\n") + 4 + length == len(whole)
            and ex.app is not None
            and headers.unchanged_for_client(response.headers, ex.app, watched=response.watched)
        )

    def _complete_fast(self, ex: _Exchange, response: ResponseHead, keep: bool) -> None:
        """The response is out: the app connection back to the pool, the next request."""
        conn, upstream = ex.conn, ex.upstream
        assert conn is not None
        assert upstream is not None
        self._end_fast(ex, keep_deadline=True)  # moved below, or dropped by the task's wake-up
        self._release(ex, upstream, conn, response)
        self._log(ex)
        self.state = ClientState.WAITING
        if not keep or self.closing:  # a shutdown that came during the exchange ends it here
            self._wake_task(_Wake.CLOSE)
            return
        if self.stream.writing_paused:
            self._wake_task(_Wake.DRAIN)
            return
        self._head_started = self.parser.started
        wait = self.timeouts.client_header if self._head_started else self.timeouts.keepalive
        self._deadline.set(self._clock() + wait)
        self._pump_client()

    def _hand_off(self, ex: _Exchange, *, written: bool, deadline: float | None = None) -> None:
        """The task finishes this exchange, from the state the callbacks left, keeping the
        deadline in force for the app's answer."""
        if deadline is None:
            deadline = self._deadline.at
        self._end_fast(ex)
        self._handed = ex
        self._wake_task(functools.partial(self._resume, ex, written, deadline))

    def _end_fast(self, ex: _Exchange, *, keep_deadline: bool = False) -> None:
        self._fast = None
        if not keep_deadline:
            self._deadline.set(None)
        self.stream.on_eof = None
        self.stream.on_drained = None
        conn = ex.conn
        assert conn is not None
        conn.stream.on_data = None
        conn.stream.on_eof = None
        conn.stream.relay(None)
        conn.stream.hold(False)

    async def _resume(self, ex: _Exchange, written: bool, deadline: float | None) -> bool:
        self._handed = None  # from here on the exchange is this coroutine's
        assert ex.upstream is not None
        try:
            return await self._send(
                ex, ex.upstream, ex.request, conn=ex.conn, written=written, deadline=deadline
            )
        finally:
            self._log(ex)

    def _wake_task(self, why: _Wake | _Resume) -> None:
        self.stream.on_data = None
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(why)

    def _on_deadline(self) -> None:
        ex = self._fast
        if ex is None:
            self._wake_task(_Wake.TIMEOUT)
        elif not ex.head_sent:
            # The app is late: the task answers 504 (its deadline has passed already).
            self._hand_off(ex, written=True, deadline=self._clock())
        elif self.stream.writing_paused:
            self._cut(ex, errors.ClientGone("client stopped reading the response"))
        else:
            assert ex.upstream is not None
            self._cut(ex, _read_timeout(ex.upstream, self.timeouts.read))

    def _refuse(self, error: errors.ClientError, head: RequestHead | None) -> None:
        """Answer a request we will not forward, and close."""
        page = pages.Page(error.status, str(error))
        self._write_page(page, head, close=True)
        if head is None:
            self._log_line(b"-", page.status, _wall_time(), None, None)

    # --- one exchange
    async def _exchange(self, head: RequestHead) -> bool | None:
        """Handle one request; True if the connection can carry another, None if the exchange
        goes on in callbacks (the fast path)."""
        ex = _Exchange(head)
        try:
            hosts = self.engine.hosts
            if not hosts.allows(head.host):
                assert head.host is not None
                return self._answer_locally(ex, pages.Page(421, *hosts.refusal(head.host)))
            decision = self.engine.router.route(head.target)
            if isinstance(decision, Forward):
                if decision.app.command is not None:
                    return await self._forward_supervised(ex, decision)
                return await self._forward(ex, decision)
            if isinstance(decision, routing.Dashboard):
                return await self._dashboard(ex, decision)
            return self._answer_locally(ex, self._page_for(decision))
        finally:
            if self._fast is not ex:
                self._log(ex)

    def _page_for(self, decision: routing.Decision) -> pages.Page:
        if isinstance(decision, routing.Redirect):
            return pages.Page(301, "this app lives under its prefix", location=decision.location)
        if isinstance(decision, routing.Rejected):
            return pages.Page(400, decision.reason)
        return pages.Page(404, "no app is routed at this path", detail=_routes(self.engine))

    # --- sockgate's own status page
    async def _dashboard(self, ex: _Exchange, decision: routing.Dashboard) -> bool:
        """The status page, status.json and its event stream, for loopback clients only."""
        head = ex.head
        if not is_loopback(self.client_ip):
            if decision.at_root:  # `/` shows what it showed before there was a status page
                return self._answer_locally(ex, self._page_for(routing.NotFound()))
            page = pages.Page(403, "sockgate's status page answers loopback clients only")
            return self._answer_locally(ex, page)
        if head.method not in (b"GET", b"HEAD"):
            return self._answer_locally(ex, pages.Page(405, "the status page is read-only"))
        if decision.path == b"/events" and not decision.at_root:
            return await self._dashboard_events(ex)
        found = await monitor.page_or_json(self.engine.monitor, decision.path)
        if found is None:
            page = pages.Page(404, "no such page", detail=f"try {self.engine.config.dashboard}")
            return self._answer_locally(ex, page)
        content_type, body = found
        keep = self._can_continue(head)
        if keep:
            self._skip_end_of_request()
        ex.status = 200
        response = monitor.reply(200, content_type, body, close=not keep)
        with_body = head.method != b"HEAD"
        ex.sent = len(body) if with_body else 0
        self._write_client(response + body if with_body else response)
        return keep

    async def _dashboard_events(self, ex: _Exchange) -> bool:
        """The status document once a second, until the client leaves or sockgate stops; it
        counts as no app's stream and never holds the shutdown."""
        if self.closing:
            return self._answer_locally(ex, pages.Page(503, "sockgate is stopping"))
        ex.status = 200
        head = monitor.events_head()
        if ex.head.method == b"HEAD":
            self._write_client(head)
            return False
        self.state = ClientState.EVENTS
        ex.sent = await self.engine.monitor.serve_events(self.stream, head, self.timeouts.send)
        return False

    def _answer_locally(self, ex: _Exchange, page: pages.Page) -> bool:
        head = ex.head
        keep = self._can_continue(head)
        if keep:
            self._skip_end_of_request()
        ex.status = page.status
        ex.sent = self._write_page(page, head, close=not keep)
        return keep

    def _can_continue(self, head: RequestHead) -> bool:
        return (
            head.keep_alive
            and not head.upgrade
            and head.framing is Framing.NONE
            and not self.parser.dead
            and not self.closing
        )

    def _skip_end_of_request(self) -> None:
        event = self.parser.events.popleft()
        assert isinstance(event, EndOfMessage), event

    def _write_page(self, page: pages.Page, head: RequestHead | None, *, close: bool) -> int:
        """Write a page of our own; returns the body bytes sent, as the access log counts them."""
        as_html = head is not None and pages.wants_html(head.headers)
        response, body = pages.render(page, as_html=as_html, close=close)
        with_body = head is None or head.method != b"HEAD"
        try:
            self.stream.write(response + body if with_body else response)
        except ConnectionError:
            return 0
        return len(body) if with_body else 0

    # --- forwarding
    async def _forward_supervised(self, ex: _Exchange, route: Forward) -> bool | None:
        """An app sockgate runs: started if need be (the request waits until it is ready), and
        not idle while the exchange (or its tunnel) lasts."""
        apps = self.engine.apps
        with apps.in_use(route.app):
            failure = await apps.ensure_ready(route.app)
            if failure is not None:
                ex.app = route.app
                return self._fail(ex, failure)
            # The exchange must end inside in_use: not in callbacks after this returns.
            return await self._forward(ex, route, callbacks=not _on_demand(route.app))

    async def _forward(
        self, ex: _Exchange, route: Forward, *, callbacks: bool = True
    ) -> bool | None:
        head, app = ex.head, route.app
        ex.app = app
        limit = self.engine.config.body_limit(app)
        if (
            limit is not None
            and head.framing is Framing.LENGTH
            and (head.content_length or 0) > limit
        ):
            return self._fail(ex, errors.BodyTooLarge(f"the body is larger than {limit} bytes"))
        queued = self._queued_error()
        if queued is not None:
            # The body is already known to be malformed: the app never sees this request.
            return self._fail(ex, queued)
        upstream = self.engine.upstream(app)
        request = self._app_request(head, route)
        if head.framing is Framing.NONE:
            self._skip_end_of_request()
            ex.body_done = True
            if callbacks and not head.upgrade:
                return await self._forward_in_callbacks(ex, upstream, request)
        return await self._send(ex, upstream, request)

    async def _forward_in_callbacks(
        self, ex: _Exchange, upstream: Upstream, request: bytes
    ) -> bool | None:
        """A request without a body on a new (or pooled) connection: the response comes back
        through the fast path's callbacks, as if the connection had been pooled."""
        try:
            conn = await upstream.acquire(retryable=_resendable(ex))
        except errors.UpstreamError as exc:
            return self._fail(ex, exc)
        ex.upstream, ex.conn, ex.request = upstream, conn, request
        if self._launch(ex):
            return None
        return await self._send(ex, upstream, request, conn=conn)

    def _app_request(self, head: RequestHead, route: Forward) -> bytes:
        return headers.app_request(
            head,
            route.target,
            route.app,
            client_ip=self.client_ip,
            default_host=self.engine.default_host,
        )

    async def _send(
        self,
        ex: _Exchange,
        upstream: Upstream,
        request: bytes,
        *,
        conn: AppConnection | None = None,
        written: bool = False,
        deadline: float | None = None,
    ) -> bool:
        """Send on `conn` (where `written` says whether the request went out already) or a
        pooled or new connection; once more on a new one if a reused one turns out closed."""
        retryable = _resendable(ex)
        for attempt in (1, 2):
            if conn is None:
                try:
                    conn = await upstream.acquire(retryable=retryable, fresh=attempt == 2)
                except errors.UpstreamError as exc:
                    return self._fail(ex, exc)
                written = False
            try:
                return await self._over(
                    ex,
                    upstream,
                    conn,
                    request,
                    retry_ok=attempt == 1,
                    written=written,
                    deadline=deadline,
                )
            except _Retry:
                log.info("%s: reused connection was closed by the app; retrying", upstream.app.name)
                conn, deadline = None, None
        raise AssertionError("unreachable")

    async def _over(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        request: bytes,
        *,
        retry_ok: bool,
        written: bool = False,
        deadline: float | None = None,
    ) -> bool:
        """One attempt on one app connection; `deadline` for the app's first answer if not
        the read timeout from now."""
        head = ex.head
        conn.parser.head_request = head.method == b"HEAD"
        pump: asyncio.Task[None] | None = None
        self.stream.on_eof = lambda: self._client_eof(ex, conn)
        # What a finally would do, after the try: the pump is awaited outside any except or
        # finally block, which the compiled build needs (hatch_build.py).
        error: BaseException | None = None
        result = False
        try:
            try:
                if not written:
                    conn.stream.write(request)
            except ConnectionError:
                # Closed before our request went out (reused, or new and dropped from the
                # listen queue of an app that stopped): nothing reached the app, send again.
                conn.close()
                if retry_ok and not conn.cut_off:
                    raise _Retry from None
                result = self._fail(ex, _closed_early(conn, upstream))
            else:
                if head.framing is not Framing.NONE:
                    pump = asyncio.create_task(self._pump_body(ex, conn))
                result = await self._relay(ex, upstream, conn, retry_ok=retry_ok, deadline=deadline)
        except BaseException as exc:  # re-raised below, once the attempt is cleaned up
            error = exc
        self.stream.on_eof = None
        if conn.state is ConnState.ACTIVE:
            conn.close()
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if error is not None:
            raise error
        return result

    def _queued_error(self) -> errors.ClientError | None:
        """A framing error already parsed within the current request's body."""
        for event in self.parser.events:
            if isinstance(event, EndOfMessage):
                return None
            if isinstance(event, ProtocolError):
                return event.error
        return None

    def _client_eof(self, ex: _Exchange, conn: AppConnection) -> None:
        # Like nginx: a client that closes while its response is under way has gone; stop the
        # app's work (an SSE stream sees its client leave at once), unless requests still
        # queued show a pipelining client that only half-closed: those are answered.
        pipelined = self.stream.has_buffered or any(
            isinstance(event, RequestHead) for event in self.parser.events
        )
        if self.stream.closed or not pipelined:
            ex.client_left = True
            conn.close()

    async def _pump_body(self, ex: _Exchange, conn: AppConnection) -> None:
        """The request body, client to app, as it arrives. Failures abort the app connection
        and are kept in `ex.pump_error` for the response side to report."""
        assert ex.app is not None
        limit = self.engine.config.body_limit(ex.app)
        chunked = ex.head.framing is Framing.CHUNKED
        total = 0
        try:
            while True:
                try:
                    event = await self._next_event(self._clock() + self.timeouts.client_header)
                except TimeoutError:
                    raise errors.ClientTimeout("the request body stalled") from None
                if event is None:
                    raise errors.ClientGone("client closed during the request body")
                if isinstance(event, ProtocolError):
                    raise event.error
                if isinstance(event, EndOfMessage):
                    if chunked:
                        conn.stream.write(LAST_CHUNK)
                    ex.body_done = True
                    return
                assert isinstance(event, Data)
                total += len(event.data)
                if limit is not None and total > limit:
                    raise errors.BodyTooLarge(f"the body is larger than {limit} bytes")
                if chunked:
                    conn.stream.writelines(
                        [http1.chunk_header(len(event.data)), event.data, b"\r\n"]
                    )
                else:
                    conn.stream.write(event.data)
                try:
                    await conn.stream.drain(self._clock() + self.timeouts.send)
                except TimeoutError:
                    raise _send_timeout(ex) from None
        except (errors.ClientError, errors.ClientGone, errors.AppSendTimeout) as exc:
            ex.pump_error = exc
            conn.close()
        except ConnectionError:
            pass  # the app closed while reading: the response side reports what it said

    async def _relay(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        *,
        retry_ok: bool,
        deadline: float | None,
    ) -> bool:
        try:
            response = await self._response_head(
                ex, upstream, conn, retry_ok=retry_ok, deadline=deadline
            )
        except errors.SockgateError as exc:
            conn.close()
            return self._fail(ex, exc)
        if response.status == 101:
            if not any(isinstance(e, Upgrade) for e in conn.parser.events):
                conn.close()
                reason = "101 without a protocol to switch to (no Upgrade header)"
                return self._fail(ex, _bad_response(upstream, reason))
            return await self._upgrade(ex, conn, response)
        return await self._stream_response(ex, upstream, conn, response)

    async def _response_head(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        *,
        retry_ok: bool,
        deadline: float | None,
    ) -> ResponseHead:
        while True:
            event = await self._app_event(ex, upstream, conn, retry_ok=retry_ok, deadline=deadline)
            deadline = None
            if isinstance(event, EndOfMessage):
                continue  # the end of a 1xx
            if not isinstance(event, ResponseHead):
                raise _bad_response(upstream, f"unexpected {type(event).__name__} before a head")
            if event.status == 101 and not ex.head.upgrade:
                raise _bad_response(upstream, "101 to a request that did not ask to upgrade")
            if not event.informational:
                return event
            if ex.head.version == b"1.1":
                self._write_client(
                    http1.response_head(
                        event.status, event.reason, headers.to_client(event.headers, upgrade=False)
                    )
                )

    async def _app_event(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        *,
        retry_ok: bool,
        deadline: float | None,
    ) -> Event:
        """The next event of the app's response before its head is through, errors named."""
        if deadline is None:
            deadline = self._clock() + self.timeouts.read
        try:
            event = await conn.next_event(deadline)
        except TimeoutError:
            raise self._blame(ex) or _read_timeout(upstream, self.timeouts.read) from None
        except ConnectionError:
            # On a Unix socket a reset means the app closed with our request unread: on a
            # reused connection, or on a new one it had in its listen queue when it stopped
            # (a restart under load). Unread, a request without a body may go again.
            if retry_ok and _unanswered(conn) and not _body_started(ex):
                raise _Retry from None
            raise self._blame(ex) or _closed_early(conn, upstream) from None
        if event is None:
            blame = self._blame(ex)
            if blame is not None:
                raise blame
            if retry_ok and conn.reused and _unanswered(conn) and _resendable(ex):
                raise _Retry
            raise _closed_early(conn, upstream)
        if isinstance(event, ProtocolError):
            raise _bad_response(upstream, event.reason)
        return event

    def _blame(self, ex: _Exchange) -> errors.SockgateError | None:
        """When the app side failed because the client side did: the client's fault."""
        if ex.client_left:
            return errors.ClientGone("client closed the connection")
        return ex.pump_error

    async def _stream_response(
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, response: ResponseHead
    ) -> bool:
        framing, keep, pending = self._plan_response(ex, response)
        counts = self.engine.stats.app(upstream.app.name)
        ex.stream = _is_event_stream(response)
        if ex.stream:
            counts.sse += 1
        try:
            await self._stream_body(ex, upstream, conn, response, framing, pending)
        except (errors.SockgateError, ConnectionError) as exc:
            conn.close()
            if not ex.head_sent and isinstance(exc, errors.SockgateError):
                ex.status = 0
                return self._fail(ex, exc)  # nothing went out yet: a page still can
            # The head is out: the only honest signal left is to close without finishing.
            self._note_fault(ex, exc)
            self.stream.abort()
            return False
        finally:
            if ex.stream:
                counts.sse -= 1
        self._release(ex, upstream, conn, response)
        return keep and ex.body_done

    def _plan_response(
        self, ex: _Exchange, response: ResponseHead
    ) -> tuple[Framing, bool, list[bytes]]:
        """The framing towards the client, whether the connection carries another request,
        and the response head to send."""
        head = ex.head
        framing, out = _client_framing(head, response, ex.app)
        keep = self._keeps_client(ex, framing)
        if not keep:
            out.append((b"Connection", b"close"))
        elif head.version == b"1.0":
            out.append((b"Connection", b"keep-alive"))
        ex.status = response.status
        return framing, keep, [http1.response_head(response.status, response.reason, out)]

    def _keeps_client(self, ex: _Exchange, framing: Framing) -> bool:
        """Whether the client connection carries another request after this response."""
        head = ex.head
        return (
            head.keep_alive
            and not head.upgrade
            and not self.closing
            and not self.parser.dead
            and framing is not Framing.UNTIL_CLOSE
            # An app answering before the request body is through: the rest of the body
            # cannot be told from the next request, so this connection ends with the answer.
            and ex.body_done
        )

    @staticmethod
    def _release(
        ex: _Exchange, upstream: Upstream, conn: AppConnection, response: ResponseHead
    ) -> None:
        """Back to the pool if the exchange ended cleanly on a connection the app keeps."""
        finished = ex.body_done and response.keep_alive and not conn.parser.dead
        if finished and response.framing is not Framing.UNTIL_CLOSE:
            upstream.release(conn)
        else:
            conn.close()

    async def _stream_body(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        response: ResponseHead,
        framing: Framing,
        pending: list[bytes],
    ) -> None:
        """Relay the body. What the parser already holds goes out with `pending` (the head) in
        one write; before waiting on the app, everything gathered so far is sent, so the head
        and each SSE event leave as soon as they arrive."""
        chunked = framing is Framing.CHUNKED
        while True:
            if not conn.parser.events:
                await self._flush(ex, pending)
            event = await self._body_event(ex, upstream, conn, response)
            if isinstance(event, EndOfMessage):
                if chunked:
                    pending.append(LAST_CHUNK)
                await self._flush(ex, pending)
                return
            data = event.data
            ex.sent += len(data)
            if chunked:
                pending += (http1.chunk_header(len(data)), data, b"\r\n")
            else:
                pending.append(data)

    async def _flush(self, ex: _Exchange, pending: list[bytes]) -> None:
        if pending:
            self.stream.writelines(pending)
            pending.clear()
            ex.head_sent = True
        try:
            await self.stream.drain(self._clock() + self.timeouts.send)
        except TimeoutError:
            raise errors.ClientGone("client stopped reading the response") from None

    async def _body_event(
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, response: ResponseHead
    ) -> Data | EndOfMessage:
        try:
            event = await conn.next_event(self._clock() + self.timeouts.read)
        except TimeoutError:
            raise self._blame(ex) or _read_timeout(upstream, self.timeouts.read) from None
        if event is None:
            blame = self._blame(ex)
            if blame is not None:
                raise blame  # our own abort of the app connection is no end of a body
            if conn.cut_off:
                raise _retired(upstream.app.name, str(upstream.app.socket))
            if response.framing is not Framing.UNTIL_CLOSE:
                raise errors.AppCutShort(
                    upstream.app.name, str(upstream.app.socket), "the body was incomplete"
                )
            return END  # close-delimited: the app's close is the end
        if isinstance(event, ProtocolError):
            raise errors.AppCutShort(upstream.app.name, str(upstream.app.socket), event.reason)
        assert isinstance(event, Data | EndOfMessage), event
        return event

    async def _upgrade(self, ex: _Exchange, conn: AppConnection, response: ResponseHead) -> bool:
        ex.status = 101
        self.stream.on_eof = None  # half-closes are part of the tunnelled protocol
        self._write_client(
            http1.response_head(
                101,
                response.reason,
                headers.to_client(response.headers, upgrade=True, app=ex.app, host=ex.head.host),
            )
        )
        for source, stream in (
            (self.parser.events, self.stream),
            (conn.parser.events, conn.stream),
        ):
            for event in source:
                if isinstance(event, Upgrade):
                    stream.unread(event.trailing)
            source.clear()
        self.state = ClientState.TUNNEL
        self._tunnel = conn
        conn.on_cut = self.stream.close  # a reload retired the app: both sides end
        assert ex.app is not None
        counts = self.engine.stats.app(ex.app.name)
        counts.upgrades += 1
        ex.stream = True
        try:
            await tunnel.splice(self.stream, conn.stream, self.timeouts.read)
        except TimeoutError:
            log.info("%s: idle tunnel closed after %gs", ex.app.name, self.timeouts.read)
        finally:
            counts.upgrades -= 1
            self._tunnel = None
            conn.on_cut = None
            conn.close()
        return False

    # --- answers and errors
    def _fail(self, ex: _Exchange, error: errors.SockgateError) -> bool:
        """Answer with sockgate's own page for `error` (nothing of a response was sent yet)."""
        if isinstance(error, errors.ClientGone):
            self._note_fault(ex, error)
            return False
        head = ex.head
        status = errors.status_for(error, navigation=pages.is_navigation(head.method, head.headers))
        ex.status = status
        self._note_fault(ex, error)
        if isinstance(error, errors.UpstreamError):
            page = pages.Page(status, error.fault, error.detail, error.app, error.socket)
            if status == RETRY_PAGE_STATUS:
                detail = f"{error.detail}; this page tries again every {RETRY_EVERY}s"
                page = dataclasses.replace(page, detail=detail, refresh=RETRY_EVERY)
        else:
            page = pages.Page(status, str(error))
        ex.sent = self._write_page(page, ex.head, close=True)
        return False

    def _note_fault(self, ex: _Exchange, error: BaseException) -> None:
        if isinstance(error, errors.ClientGone | ConnectionError):
            ex.status = ex.status or CLIENT_CLOSED
            return
        if isinstance(error, errors.SockgateError):
            ex.status = ex.status or errors.status_for(error)
        if isinstance(error, errors.UpstreamError):
            ex.fault = f"{error.fault}: {error.detail}" if error.detail else error.fault
            log.error("%s (request %s)", error, _request_line(ex.head).decode("latin-1"))

    def _write_client(self, data: bytes) -> None:
        self.stream.write(data)

    def _log(self, ex: _Exchange) -> None:
        now = _wall_time()
        head = ex.head
        app = ex.app
        name = None
        if app is not None:  # the status page's counters: O(1), bounded
            name = app.name
            self.engine.stats.app(name).record(
                now, head.method, head.target, ex.status, now - ex.started, ex.stream, ex.fault
            )
        self.engine.access_log.log(  # positional, and not through _log_line: once per exchange
            self.client_ip,
            _request_line(head),
            ex.status,
            ex.sent,
            head.referer,
            head.user_agent,
            ex.started,
            name,
            now,
        )

    def _log_line(
        self,
        request_line: bytes,
        status: int,
        started: float,
        head: RequestHead | None,
        app: str | None,
        sent: int = 0,
        now: float | None = None,
    ) -> None:
        self.engine.access_log.log(  # positional: once per exchange
            self.client_ip,
            request_line,
            status,
            sent,
            head.referer if head else None,
            head.user_agent if head else None,
            started,
            app,
            _wall_time() if now is None else now,
        )


def _client_framing(
    head: RequestHead, response: ResponseHead, app: App | None
) -> tuple[Framing, http1.Headers]:
    out = headers.to_client(
        response.headers, upgrade=False, app=app, host=head.host, watched=response.watched
    )
    if response.framing is Framing.NONE:
        if (
            response.content_length is not None
            and response.status >= 200
            and response.status != 204
        ):
            out.append((b"Content-Length", b"%d" % response.content_length))
        return Framing.NONE, out
    if response.framing is Framing.LENGTH:
        out.append((b"Content-Length", b"%d" % (response.content_length or 0)))
        return Framing.LENGTH, out
    if head.version == b"1.1":
        out.append((b"Transfer-Encoding", b"chunked"))
        return Framing.CHUNKED, out
    return Framing.UNTIL_CLOSE, out


def _on_demand(app: App) -> bool:
    return app.command is not None and app.command.on_demand


def _is_event_stream(response: ResponseHead) -> bool:
    for name, value in response.headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value.lstrip().lower().startswith(b"text/event-stream")
    return False


def _request_line(head: RequestHead) -> bytes:
    return b"%s %s HTTP/%s" % (head.method, head.target, head.version)


def _routes(engine: Engine) -> str:
    apps = engine.router.apps
    if not apps:
        return "no apps are configured"
    return "routes: " + ", ".join(f"{a.prefix} -> {a.name}" for a in apps)


def _body_started(ex: _Exchange) -> bool:
    return ex.head.framing is not Framing.NONE


def _resendable(ex: _Exchange) -> bool:
    return ex.head.method in IDEMPOTENT and not _body_started(ex)


def _unanswered(conn: AppConnection) -> bool:
    """The app sent nothing back, and the end is the app's (not a cut after a reload)."""
    return conn.received == 0 and not conn.cut_off


def _retired(app: str, socket: str) -> errors.UpstreamError:
    return errors.AppRetired(app, socket, "the drain deadline after a reload passed")


def _closed_early(conn: AppConnection, upstream: Upstream) -> errors.UpstreamError:
    app = upstream.app
    if conn.cut_off:
        return _retired(app.name, str(app.socket))
    if conn.received:
        return errors.AppBadResponse(app.name, str(app.socket), "closed in the middle of the head")
    return errors.AppClosedEarly(app.name, str(app.socket))


def _bad_response(upstream: Upstream, reason: str) -> errors.UpstreamError:
    return errors.AppBadResponse(upstream.app.name, str(upstream.app.socket), reason)


def _read_timeout(upstream: Upstream, seconds: float) -> errors.UpstreamError:
    app = upstream.app
    return errors.AppReadTimeout(app.name, str(app.socket), f"silent for {seconds:g}s")


def _send_timeout(ex: _Exchange) -> errors.UpstreamError:
    assert ex.app is not None
    return errors.AppSendTimeout(ex.app.name, str(ex.app.socket), "the app stopped reading")
