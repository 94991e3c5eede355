"""The HTTP/1.1 fast path: exchanges driven by the transports' callbacks, with no task.

While the client connection's task waits for a request it is parked; the client stream hands
received bytes to `on_client_data` instead of its buffer. A request without a body, to an app
whose pool has a connection, is decided and sent from that callback (`dispatch`, `launch`), and
the app connection's callback (`on_app_data`) answers it: a response whose end is already parsed
goes out in one write (`finish`); a Content-Length body streams past the parser, chunk by chunk,
holding the app back while the client is behind (`stream_body`, `relay_body`). Then the next
request is taken from what the client already sent (`pump_client`).

Everything else is handed to the task (`hand`, `hand_off`) with the exchange as the callbacks
left it: decided, its phase saying whether the request went out. Nothing is decided twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .. import errors
from ..exchange.forward import IDEMPOTENT, Exchange, on_demand, reusable
from ..exchange.phase import COMPLETE, RESPONDING, SENT, move
from ..exchange.relay import read_timeout, retired
from ..http import headers
from ..http.events import END, Data, EndOfMessage, Framing, RequestHead, ResponseHead
from ..http.parse import ResponseParser
from ..http.respond import passes_unchanged
from ..http.routing import Forward
from ..http.serialise import LAST_CHUNK, chunk_header
from .clientstate import ClientState, Wake
from .upstream import AppConnection, Upstream

if TYPE_CHECKING:
    from .client import ClientConnection

_wall_time: Final = time.time


class Callbacks:
    """One client connection's fast path. `fast` is the exchange under way in callbacks."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.fast: Exchange | None = None
        self.head_started = False
        # The streams' callbacks of every fast exchange, bound once (binding a method is an
        # allocation); let go by `close()`, so the connection is freed without the collector.
        self._client_data: Callable[[bytes], None] | None = self.on_client_data
        self._client_eof: Callable[[], None] | None = self.on_client_eof
        self._client_eof_fast: Callable[[], None] | None = self.on_client_eof_fast
        self._app_data: Callable[[bytes], None] | None = self.on_app_data
        self._app_eof: Callable[[], None] | None = self.on_app_eof

    def close(self) -> Exchange | None:
        """The connection ends: let go of everything; the exchange still under way, if any."""
        ex = self.fast
        if ex is not None:
            self.end_fast(ex)
        self._client_data = self._client_eof = self._client_eof_fast = None
        self._app_data = self._app_eof = None
        return ex

    # --- between exchanges
    def listen(self, first: bool) -> None:
        """The task parks: the next request's deadline, then what the client sent or sends."""
        c = self.client
        t = c.timeouts
        self.head_started = c.parser.started
        wait = t.client_header if first or self.head_started else t.keepalive
        c.deadline.set(c.clock() + wait)
        self.pump_client()

    def unlisten(self) -> None:
        stream = self.client.stream
        stream.on_data = None
        if stream.on_eof is self._client_eof:
            stream.on_eof = None

    def pump_client(self) -> None:
        """Between exchanges: start what the client already sent, or listen for more."""
        c = self.client
        stream, parser = c.stream, c.parser
        while not parser.events and stream.has_buffered:
            self.on_client_data(stream.take(), listening=False)
        if parser.events:
            self.dispatch()
        elif stream.peer_closed:
            c.wake_task(Wake.EOF)
        else:
            stream.on_data = self._client_data
            stream.on_eof = self._client_eof

    def on_client_data(self, data: bytes, listening: bool = True) -> None:
        c = self.client
        parser = c.parser
        parser.feed(data)
        if parser.events:
            if listening:
                self.dispatch()
        elif not self.head_started:
            self.head_started = True
            c.deadline.set(c.clock() + c.timeouts.client_header)

    def on_client_eof(self) -> None:
        self.client.wake_task(Wake.EOF)

    def dispatch(self) -> None:
        """Decide the request at the front of the parser's queue and start it here if it is a
        common one and a pooled app connection is at hand; else hand it to the task."""
        c = self.client
        events = c.parser.events
        head = events[0]
        if (
            type(head) is not RequestHead
            or len(events) < 2
            or head.framing is not Framing.NONE
            or head.upgrade
            or c.closing
            or c.stream.writing_paused
        ):
            c.wake_task(Wake.EVENTS)  # the task reads it (a body, an error...) and decides
            return
        events.popleft()
        ex = c.exchange(head)
        decision = ex.decision
        # An app started on demand counts its exchanges (see Exchange._forward_supervised).
        if type(decision) is Forward and not on_demand(decision.app):
            upstream = ex.upstream
            assert isinstance(upstream, Upstream)
            conn = upstream.take_idle(retryable=head.method in IDEMPOTENT)
            if conn is not None:
                c.skip_end_of_request()
                ex.conn = conn
                ex.body_done = True
                ex.request = ex.app_request(decision)
                c.state = ClientState.ACTIVE
                if self.launch(ex):
                    return
        self.hand(ex)

    def hand(self, ex: Exchange) -> None:
        """The task takes the exchange from here, as it stands."""
        c = self.client
        c.handed = ex
        c.wake_task(Wake.EXCHANGE)

    def launch(self, ex: Exchange) -> bool:
        """Send the request and wait for the response in callbacks; False if the app
        connection turned out closed (the task then deals with it)."""
        conn = ex.conn
        assert isinstance(conn, AppConnection)
        c = self.client
        self.fast = ex
        c.stream.on_data = None  # what the client sends next waits in the stream's buffer
        c.stream.on_eof = self._client_eof_fast
        conn.parser.head_request = ex.head.method == b"HEAD"
        try:
            conn.stream.write(ex.request)
        except ConnectionError:
            self.end_fast(ex)
            return False
        ex.phase = move(ex.phase, SENT)
        conn.stream.on_data = self._app_data
        conn.stream.on_eof = self._app_eof
        c.deadline.set(c.clock() + c.timeouts.read)
        return True

    def on_client_eof_fast(self) -> None:
        ex = self.fast
        if ex is not None and ex.conn is not None:
            self.client.client_eof(ex)

    def on_app_data(self, data: bytes) -> None:
        ex = self.fast
        assert ex is not None
        conn = ex.conn
        assert isinstance(conn, AppConnection)
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
            # connection is then not reused (`reusable`).
            if events[-1] is END and len(events) <= 3:
                self.finish(ex, conn, response, data if whole else None)
                return
            if any(type(event) is EndOfMessage for event in events):
                self.finish(ex, conn, response)
                return
            if response.framing is Framing.LENGTH and all(
                type(events[i]) is Data for i in range(1, len(events))
            ):
                self.stream_body(ex, conn, response)
                return
        self.hand_off(ex)  # chunked or to the close, 1xx, or something to report

    def on_app_eof(self) -> None:
        ex = self.fast
        if ex is None:
            return
        app = ex.app
        assert app is not None
        if ex.phase == SENT:
            self.hand_off(ex)
        elif ex.conn is not None and ex.conn.cut_off:
            self.cut(ex, retired(app.name, str(app.socket)))
        elif ex.client_left:
            self.cut(ex, errors.ClientGone("client closed the connection"))
        else:
            self.cut(ex, errors.AppCutShort(app.name, str(app.socket), "the body was incomplete"))

    def stream_body(self, ex: Exchange, conn: AppConnection, response: ResponseHead) -> None:
        """A body of known length, longer than what has arrived: relayed as it comes, past
        the parser (no copy, no event per chunk), with backpressure both ways."""
        c = self.client
        events = conn.parser.events
        events.popleft()
        _, ex.keep, pending = c.plan_response(ex, response)
        got = 0
        while events:
            event = events.popleft()
            assert type(event) is Data, event  # on_app_data saw only Data after the head
            got += len(event.data)
            pending.append(event.data)
        ex.sent += got
        ex.remaining = (response.content_length or 0) - got
        ex.response = response
        # The parser stays behind mid-body: the next response on this connection starts fresh.
        conn.parser.close()
        conn.parser = ResponseParser(watch=headers.RESPONSE_WATCH)
        conn.stream.relay(self.on_app_body)
        c.stream.on_drained = self.on_client_drained
        self.relay_body(ex, conn, pending)

    def on_app_body(self, data: memoryview) -> bool:
        """The next bytes of the body, in the app stream's buffer (`Stream.relay`); True when
        they are still queued for the client after this (the buffer is then not reused)."""
        ex = self.fast
        assert ex is not None
        conn = ex.conn
        assert isinstance(conn, AppConnection)
        size = len(data)
        conn.received += size
        if size > ex.remaining:
            # More than Content-Length said: the rest is no response; the connection ends.
            conn.parser.dead = True
            data = data[: ex.remaining]
            size = ex.remaining
        ex.remaining -= size
        ex.sent += size
        self.relay_body(ex, conn, [data])
        return self.client.stream.unsent > 0

    def relay_body(
        self, ex: Exchange, conn: AppConnection, parts: list[bytes] | list[memoryview]
    ) -> None:
        c = self.client
        try:
            c.stream.writelines(parts)
        except ConnectionError as exc:
            self.cut(ex, exc)
            return
        if ex.phase == SENT:
            ex.phase = move(SENT, RESPONDING)
        if ex.remaining == 0:
            assert ex.response is not None
            self.complete(ex, ex.response, ex.keep)
        elif c.stream.writing_paused:
            conn.stream.hold(True)
            c.deadline.set(c.clock() + c.timeouts.send)
        else:
            c.deadline.set(c.clock() + c.timeouts.read)

    def on_client_drained(self) -> None:
        ex = self.fast
        if ex is not None and isinstance(ex.conn, AppConnection):
            ex.conn.stream.hold(False)
            c = self.client
            c.deadline.set(c.clock() + c.timeouts.read)

    def cut(self, ex: Exchange, error: BaseException) -> None:
        """End a fast exchange whose head is out: without finishing, so the client sees it."""
        assert ex.conn is not None
        ex.conn.close()
        self.end_fast(ex)
        ex.cut(error)
        ex.log()
        self.client.wake_task(Wake.CLOSE)

    def finish(
        self,
        ex: Exchange,
        conn: AppConnection,
        response: ResponseHead,
        whole: bytes | None = None,
    ) -> None:
        """The whole response is parsed: send it in one write and take the next request.
        `whole`: the read that held exactly this response, passed on as it is if it may be."""
        c = self.client
        events = conn.parser.events
        if (
            whole is not None
            and ex.app is not None
            and passes_unchanged(ex.head, response, whole, ex.app, reusable=c.reusable(ex))
        ):
            events.clear()
            try:
                c.stream.write(whole)
            except ConnectionError as exc:
                self.cut(ex, exc)
                return
            ex.status = response.status
            ex.sent = response.content_length or 0
            ex.phase = move(SENT, RESPONDING)
            self.complete(ex, response, True)
            return
        events.popleft()
        framing, keep, pending = c.plan_response(ex, response)
        chunked = framing is Framing.CHUNKED
        while type(event := events.popleft()) is Data:
            data = event.data
            ex.sent += len(data)
            if chunked:
                pending += (chunk_header(len(data)), data, b"\r\n")
            else:
                pending.append(data)
        if chunked:
            pending.append(LAST_CHUNK)
        try:
            c.stream.writelines(pending)
        except ConnectionError as exc:
            self.cut(ex, exc)
            return
        ex.phase = move(SENT, RESPONDING)
        self.complete(ex, response, keep)

    def complete(self, ex: Exchange, response: ResponseHead, keep: bool) -> None:
        """The response is out: the app connection back to the pool, the next request."""
        c = self.client
        self.end_fast(ex, keep_deadline=True)  # moved below, or dropped by the task's wake-up
        conn = ex.conn  # as Exchange.release_app, with no call through the protocol
        assert isinstance(conn, AppConnection)
        if reusable(ex, response, conn.parser.dead):
            conn.release()
        else:
            conn.close()
        ex.phase = move(ex.phase, COMPLETE)
        ex.log()
        c.state = ClientState.WAITING
        if not keep or c.closing:  # a shutdown that came during the exchange ends it here
            c.wake_task(Wake.CLOSE)
            return
        if c.stream.writing_paused:
            c.wake_task(Wake.DRAIN)
            return
        self.head_started = c.parser.started
        wait = c.timeouts.client_header if self.head_started else c.timeouts.keepalive
        c.deadline.set(c.clock() + wait)
        self.pump_client()

    def hand_off(self, ex: Exchange, deadline: float | None = None) -> None:
        """The task finishes this exchange, from the state the callbacks left, keeping the
        deadline in force for the app's answer."""
        ex.answer_by = self.client.deadline.at if deadline is None else deadline
        self.end_fast(ex)
        self.hand(ex)

    def end_fast(self, ex: Exchange, *, keep_deadline: bool = False) -> None:
        c = self.client
        self.fast = None
        if not keep_deadline:
            c.deadline.set(None)
        c.stream.on_eof = None
        c.stream.on_drained = None
        conn = ex.conn
        assert isinstance(conn, AppConnection)
        conn.stream.on_data = None
        conn.stream.on_eof = None
        conn.stream.relay(None)
        conn.stream.hold(False)

    def on_deadline(self) -> None:
        c = self.client
        ex = self.fast
        if ex is None:
            c.wake_task(Wake.TIMEOUT)
        elif ex.phase == SENT:
            # The app is late: the task answers 504 (its deadline has passed already).
            self.hand_off(ex, deadline=c.clock())
        elif c.stream.writing_paused:
            self.cut(ex, errors.ClientGone("client stopped reading the response"))
        else:
            assert isinstance(ex.upstream, Upstream)
            self.cut(ex, read_timeout(ex.upstream, c.timeouts.read))
