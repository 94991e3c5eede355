"""One HTTP/2 stream as the client side of an exchange (exchange.sides.ClientSide).

The request body arrives as events the connection queues here; its flow-control window is
opened only as the exchange takes them, so a slow app holds the client back. The response goes
out as h2 frames within the client's windows, so a slow client holds the app back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from .. import errors
from ..errors import ClientError
from ..exchange.phase import ANSWERED, RESPONDING, SENT, move
from ..http import h2heads, pages
from ..http.events import END, Data, EndOfMessage, Event, Headers, ResponseHead, Upgrade
from ..http.routing import Dashboard
from ..status import monitor
from . import statuspage
from .upstream import AppConnection

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..exchange.forward import Exchange
    from ..exchange.sides import AppSide
    from .h2conn import H2Client


class H2Stream:
    """The client side of one exchange on an HTTP/2 connection."""

    closing = False  # each stream is its connection's last use of it: nothing to keep alive

    def __init__(self, conn: H2Client, stream_id: int, *, ended: bool, tunnel: bool) -> None:
        """`ended`: the client ended its side with the request head; `tunnel`: the request is
        a WebSocket (RFC 8441), whose message is the head alone and whose DATA frames are the
        tunnel's bytes."""
        self.conn = conn
        self.id = stream_id
        self.timeouts = conn.timeouts
        self.client_ip = conn.client_ip
        self.scheme = b"https"
        self._in: deque[Event] = deque([END] if ended or tunnel else [])
        self.client_ended = ended
        # Both directions may wait at once (the request body in, the response's window out):
        # a wake-up wakes every waiter, and each looks again at what it waits for.
        self._waiters: list[asyncio.Future[None]] = []
        self.reset = False  # by the client, or by the connection's end
        self.done = False  # our side ended (END_STREAM or RST_STREAM sent)
        self.watching: Exchange | None = None
        self._head: list[tuple[bytes, bytes]] | None = None
        self._out: deque[bytes] = deque()
        self._end = False
        self.endless = False  # the status page's live feed: ended, not waited for, at a stop
        self._sink: _EventSink | None = None

    def __repr__(self) -> str:
        return f"<H2Stream {self.id} reset={self.reset} done={self.done}>"

    # --- what the connection tells it
    def received(self, event: Data | EndOfMessage) -> None:
        self._in.append(event)
        if isinstance(event, EndOfMessage):
            self.client_ended = True
        self.wake()

    def client_reset(self) -> None:
        self.reset = True
        if self._sink is not None and self._sink.on_eof is not None:
            self._sink.on_eof()
        ex = self.watching
        if ex is not None:
            ex.client_left = True
            if ex.conn is not None:
                ex.conn.close()
        self.wake()

    def wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, deadline: float) -> None:
        waiter = self.conn.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # --- the request, in
    def clock(self) -> float:
        return self.conn.loop.time()

    async def next_body_event(self, deadline: float) -> Event | None:
        while not self._in:
            if self.reset:
                return None
            await self._wait(deadline)
        event = self._in.popleft()
        if isinstance(event, Data):
            self.conn.consumed(self.id, len(event.data))
        return event

    def queued_error(self) -> ClientError | None:
        return None  # h2 checks each frame as it comes; a bad one resets the stream

    def skip_end_of_request(self) -> None:
        event = self._in.popleft()
        assert isinstance(event, EndOfMessage), event

    def watch_client(self, ex: Exchange | None) -> None:
        self.watching = ex

    # --- the response, out
    def interim(self, ex: Exchange, response: ResponseHead) -> None:
        if response.status == 103:  # early hints; 100 Continue is HTTP/1.1's business
            fields = h2heads.response_fields(ex.head, response, ex.app)
            self.conn.send_headers(self.id, fields, end=False)

    def begin(self, ex: Exchange, response: ResponseHead) -> None:
        ex.status = response.status
        ex.keep = True
        self._head = h2heads.response_fields(ex.head, response, ex.app)

    def body(self, ex: Exchange, data: bytes) -> None:
        if data:
            self._out.append(data)

    def end(self, ex: Exchange) -> None:
        self._end = True

    async def flush(self, ex: Exchange) -> None:
        deadline = self.clock() + self.timeouts.send
        if self.reset:
            raise errors.ClientGone("the client reset the stream")
        if self._head is not None:
            head, self._head = self._head, None
            self.conn.send_headers(self.id, head, end=self._end and not self._out)
            if ex.phase == SENT:  # an app's response (a page of sockgate's own is ANSWERED)
                ex.phase = move(SENT, RESPONDING)
            self.done = self._end and not self._out
        while self._out:
            window = self.conn.window(self.id)
            if window <= 0:
                try:
                    await self._wait(deadline)
                except TimeoutError:
                    raise errors.ClientGone("the client's window stayed shut") from None
                if self.reset:
                    raise errors.ClientGone("the client reset the stream")
                continue
            data = self._out.popleft()
            if len(data) > window:
                self._out.appendleft(data[window:])
                data = data[:window]
            last = self._end and not self._out
            self.conn.send_data(self.id, data, end=last)
            self.done = last
        if self._end and not self.done:
            self.conn.send_data(self.id, b"", end=True)
            self.done = True
        await self.conn.drain(deadline)

    def answer(self, ex: Exchange, page: pages.Page) -> bool:
        ex.status = page.status
        headers, body = pages.parts(page, as_html=pages.wants_html(ex.head.headers))
        ex.sent = self.respond(ex, page.status, headers, body)
        return True

    def page(self, ex: Exchange, page: pages.Page) -> None:
        self.answer(ex, page)

    def respond(self, ex: Exchange, status: int, headers: Headers, body: bytes) -> int:
        """A whole response of sockgate's own, at once (small: pages, the status document).
        Returns the body bytes sent."""
        if self.reset or self.done:
            return 0
        with_body = ex.head.method != b"HEAD" and body
        self.conn.send_headers(self.id, h2heads.page_fields(status, headers), end=not with_body)
        if with_body:  # past the window: sent as the window opens (h2 would refuse it)
            if len(body) <= self.conn.window(self.id):
                self.conn.send_data(self.id, body, end=True)
            else:
                self.conn.reset(self.id, ErrorCodes.INTERNAL_ERROR)
                return 0
        self.done = True
        return len(body) if with_body else 0

    def abort(self) -> None:
        if not self.done and not self.reset:
            self.conn.reset(self.id, ErrorCodes.INTERNAL_ERROR)
            self.done = True

    async def tunnel(self, ex: Exchange, conn: AppSide, response: ResponseHead) -> None:
        """The app took the WebSocket (101): the stream opens with 200 and carries its bytes
        both ways until either side ends (RFC 8441); idle for `timeouts.read`, it ends."""
        assert isinstance(conn, AppConnection)
        self.conn.send_headers(self.id, h2heads.tunnel_fields(response), end=False)
        for event in conn.parser.events:
            if isinstance(event, Upgrade) and event.trailing:
                self.body(ex, event.trailing)
        conn.parser.events.clear()
        conn.on_cut = self.abort  # a reload retired the app
        ups = asyncio.ensure_future(self._client_to_app(conn))
        downs = asyncio.ensure_future(self._app_to_client(ex, conn))
        error: BaseException | None = None  # re-raised after the clean-up (no await in finally)
        try:
            await asyncio.wait([ups, downs], return_when=asyncio.FIRST_EXCEPTION)
        except BaseException as exc:
            error = exc
        conn.on_cut = None
        for task in (ups, downs):
            task.cancel()
        await asyncio.gather(ups, downs, return_exceptions=True)
        if error is not None:
            raise error

    async def _client_to_app(self, conn: AppConnection) -> None:
        while True:
            try:
                event = await self.next_body_event(self.clock() + self.timeouts.read)
            except TimeoutError:
                return  # idle: the other direction decides
            if event is None or isinstance(event, EndOfMessage):
                conn.stream.write_eof()  # the client is done sending; the app may still speak
                return
            assert isinstance(event, Data)
            conn.send(event.data)
            await conn.drain(self.clock() + self.timeouts.send)

    async def _app_to_client(self, ex: Exchange, conn: AppConnection) -> None:
        await self.flush(ex)  # what came with the 101
        while True:
            try:
                data = await conn.stream.read(self.clock() + self.timeouts.read)
            except TimeoutError:
                assert ex.app is not None
                log.info("%s: idle WebSocket closed after %gs", ex.app.name, self.timeouts.read)
                self.abort()
                return
            if not data:
                self._end = True
                await self.flush(ex)
                return
            ex.sent += len(data)
            self.body(ex, data)
            await self.flush(ex)

    def continue_in_callbacks(self, ex: Exchange) -> bool:
        return False

    async def status_page(self, ex: Exchange) -> bool:
        page = statuspage.refusal(ex, self.client_ip)
        if page is not None:
            return ex.answer(page)
        decision = ex.decision
        assert type(decision) is Dashboard
        engine = self.conn.engine
        if statuspage.is_events(ex):
            return await self._events(ex)
        found = await monitor.page_or_json(engine.monitor, decision.path)
        if found is None:
            return ex.answer(
                pages.Page(404, "no such page", detail=f"try {engine.config.dashboard}")
            )
        content_type, body = found
        ex.phase = move(ex.phase, ANSWERED)
        ex.status = 200
        self._head = h2heads.page_fields(200, monitor.reply_headers(content_type, body))
        if ex.head.method != b"HEAD":
            self._out.append(body)
            ex.sent = len(body)
        self._end = True
        await self.flush(ex)
        return True

    async def _events(self, ex: Exchange) -> bool:
        """The status page's live feed on this stream; like HTTP/1.1's, it never holds a stop."""
        if self.conn.closing:
            return ex.answer(pages.Page(503, "sockgate is stopping"))
        ex.phase = move(ex.phase, ANSWERED)
        ex.status = 200
        self._head = h2heads.page_fields(200, monitor.events_headers())
        if ex.head.method == b"HEAD":
            self._end = True
            await self.flush(ex)
            return True
        self.endless = True
        sink = _EventSink(self, ex)
        self._sink = sink
        ex.sent = await self.conn.engine.monitor.serve_events(sink, b"", self.timeouts.send)
        self._sink = None
        return True


class _EventSink:
    """The status page's event stream writing to an HTTP/2 stream (monitor.EventSink)."""

    def __init__(self, side: H2Stream, ex: Exchange) -> None:
        self.side = side
        self.ex = ex
        self.on_eof: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        self.side.body(self.ex, data)

    async def drain(self, deadline: float) -> None:
        try:
            await self.side.flush(self.ex)
        except errors.ClientGone as exc:
            raise ConnectionResetError(str(exc)) from None
