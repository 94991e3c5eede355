"""One HTTP/1.1 client connection: read requests, give each an exchange, and be the client side
that exchanges answer through (`exchange.sides.ClientSide`): HTTP/1.1's framing, keep-alive and
`Connection` headers live here and nowhere else.

An exchange (`exchange.forward.Exchange`) is decided once and then driven one of two ways. The
common one (a request without a body, forwarded on a pooled app connection, answered with a
complete response in what the app has sent so far) runs in the transports' callbacks while the
connection's task stays parked (`engine.callbacks`): no task wakes up for it. Anything else
(bodies, upgrades, new app connections, streaming, 1xx, faults, timeouts) is the task's, which
takes an exchange over from the callbacks at the phase they left it in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from .. import errors
from ..errors import ClientError
from ..exchange.forward import Exchange, decide
from ..exchange.phase import RESPONDING, move
from ..exchange.sides import AppSide
from ..http import headers, pages
from ..http.events import (
    EndOfMessage,
    Event,
    Framing,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgrade,
)
from ..http.parse import RequestParser
from ..http.respond import plan
from ..http.serialise import LAST_CHUNK, chunk_header, response_head
from . import statuspage, tunnel
from .callbacks import Callbacks
from .clientstate import ClientState, Wake
from .deadline import Deadline
from .shared import Engine
from .sockets import client_ip
from .stream import Stream
from .upstream import AppConnection

log = logging.getLogger(__name__)

# Compiled, a Final is a C static: no lookup of `time` on the time module at each call.
_wall_time: Final = time.time


class ClientConnection:
    def __init__(
        self, stream: Stream, engine: Engine, peer: object = None, *, scheme: bytes = b"http"
    ) -> None:
        """`peer`: the client's address as accept() gave it (else asked of the stream);
        `scheme`: b"https" over the TLS listener (X-Forwarded-Proto)."""
        self.stream = stream
        self.scheme = scheme
        self.engine = engine
        self.timeouts = engine.config.timeouts
        self.parser = RequestParser(watch=headers.REQUEST_WATCH)
        self.loop = stream.loop
        # Bound once: a call through it skips the method lookup on the loop (not compiled).
        self._clock: Callable[[], float] = self.loop.time
        self.state = ClientState.WAITING
        self.closing = False
        self._tunnel: AppConnection | None = None
        # The parked task's wake-up, and the exchange the callbacks hand it (not resumed yet:
        # closed and logged if the task is cancelled).
        self.wake: asyncio.Future[Wake] | None = None
        self.handed: Exchange | None = None
        self.deadline = Deadline(self.loop, self._on_deadline)
        self.callbacks: Callbacks | None = Callbacks(self)
        # The response under way (HTTP/1.1 carries one at a time): its framing towards the
        # client and what is gathered for the next write.
        self._framing = Framing.NONE
        self._pending: list[bytes] = []
        self.client_ip = client_ip(stream.peer() if peer is None else peer)

    def __repr__(self) -> str:
        return f"<ClientConnection {self.client_ip} {self.state.name}>"

    async def run(self) -> None:
        callbacks = self.callbacks
        assert callbacks is not None
        try:
            first = True
            while True:
                if callbacks.fast is None:
                    if self.closing:
                        return
                    self.state = ClientState.WAITING
                got = await self._next_request(first)
                if got is None:
                    return
                first = False
                self.state = ClientState.ACTIVE
                keep = await got.run()
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
            self.deadline.close()
            self.parser.close()
            owed = callbacks.close()
            if owed is None:
                owed = self.handed
            self.handed = None
            self.callbacks = None
            # Cancelled (the shutdown deadline) mid fast exchange, or before the task took up
            # an exchange the callbacks handed it: one that reached an app is logged as cut.
            if owed is not None and owed.conn is not None:
                owed.conn.close()
                owed.log()
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

    def exchange(self, head: RequestHead) -> Exchange:
        """The request's exchange, decided: the Host check and routing, once."""
        return Exchange(head, decide(self.engine, head), self, self.engine)

    # --- reading from the client
    async def _next_event(self, deadline: float | None = None) -> Event | None:
        parser = self.parser
        while not parser.events:
            data = await self.stream.read(deadline)
            if not data:
                return None
            parser.feed(data)
        return parser.events.popleft()

    async def _next_request(self, first: bool) -> Exchange | None:
        """The next exchange for the task (new, or handed over by the callbacks); None to
        close."""
        parser = self.parser
        callbacks = self.callbacks
        assert callbacks is not None
        while callbacks.fast is not None or not parser.events:
            wake = await self._park(first)
            if wake is Wake.EXCHANGE:
                handed, self.handed = self.handed, None
                assert handed is not None
                return handed
            if wake is Wake.DRAIN:
                await self.drain_client()
                continue
            if wake is Wake.TIMEOUT:
                if callbacks.head_started:
                    error = errors.ClientTimeout("the request head did not arrive in time")
                    self.refuse(error)
                return None
            if wake is Wake.EOF or wake is Wake.CLOSE:
                return None
            break
        # A client that sends requests without reading the answers is not served more of them
        # than it reads (pipelining): the next one waits until it has caught up.
        if self.stream.writing_paused:
            await self.drain_client()
        event = parser.events.popleft()
        if isinstance(event, ProtocolError):
            self.refuse(event.error)
            return None
        assert isinstance(event, RequestHead), event
        return self.exchange(event)

    async def _park(self, first: bool) -> Wake:
        wake: asyncio.Future[Wake] = self.loop.create_future()
        self.wake = wake
        callbacks = self.callbacks
        assert callbacks is not None
        if callbacks.fast is None:  # else the exchange under way takes the next request itself
            callbacks.listen(first)
        try:
            return await wake
        finally:
            self.wake = None
            callbacks.unlisten()
            self.deadline.set(None)

    async def drain_client(self) -> None:
        """Until the client has read what was sent to it, for up to the send timeout."""
        try:
            await self.stream.drain(self._clock() + self.timeouts.send)
        except TimeoutError:
            self.stream.abort()  # what it did not read is dropped with it
            raise errors.ClientGone("client stopped reading the responses") from None

    def wake_task(self, why: Wake) -> None:
        self.stream.on_data = None
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(why)

    def _on_deadline(self) -> None:
        callbacks = self.callbacks
        if callbacks is not None:
            callbacks.on_deadline()

    def refuse(self, error: errors.ClientError) -> None:
        """Answer what is no request we can take (a malformed head, one that did not arrive in
        time), and close."""
        page = pages.Page(error.status, str(error))
        self._write_page(page, None, close=True)
        now = _wall_time()
        self.engine.access_log.log(self.client_ip, b"-", page.status, 0, None, None, now, None, now)

    # --- the client side of an exchange (exchange.sides.ClientSide): the request in
    def clock(self) -> float:
        return self._clock()

    async def next_body_event(self, deadline: float) -> Event | None:
        return await self._next_event(deadline)

    def queued_error(self) -> ClientError | None:
        for event in self.parser.events:
            if isinstance(event, EndOfMessage):
                return None
            if isinstance(event, ProtocolError):
                return event.error
        return None

    def skip_end_of_request(self) -> None:
        event = self.parser.events.popleft()
        assert isinstance(event, EndOfMessage), event

    def watch_client(self, ex: Exchange | None) -> None:
        self.stream.on_eof = None if ex is None else lambda: self.client_eof(ex)

    def client_eof(self, ex: Exchange) -> None:
        # Like nginx: a client that closes while its response is under way has gone; stop the
        # app's work (an SSE stream sees its client leave at once), unless requests still
        # queued show a pipelining client that only half-closed: those are answered.
        pipelined = self.stream.has_buffered or any(
            isinstance(event, RequestHead) for event in self.parser.events
        )
        if self.stream.closed or not pipelined:
            ex.client_left = True
            if ex.conn is not None:
                ex.conn.close()

    # --- the response out
    def interim(self, ex: Exchange, response: ResponseHead) -> None:
        if ex.head.version == b"1.1":  # HTTP/1.0 has no 1xx
            out = headers.to_client(response.headers, upgrade=False)
            self.stream.write(response_head(response.status, response.reason, out))

    def begin(self, ex: Exchange, response: ResponseHead) -> None:
        framing, ex.keep, self._pending = self.plan_response(ex, response)
        self._framing = framing

    def body(self, ex: Exchange, data: bytes) -> None:
        if self._framing is Framing.CHUNKED:
            self._pending += (chunk_header(len(data)), data, b"\r\n")
        else:
            self._pending.append(data)

    def end(self, ex: Exchange) -> None:
        if self._framing is Framing.CHUNKED:
            self._pending.append(LAST_CHUNK)

    async def flush(self, ex: Exchange) -> None:
        pending = self._pending
        if pending:
            self.stream.writelines(pending)
            pending.clear()
            if ex.phase != RESPONDING:
                ex.phase = move(ex.phase, RESPONDING)
        try:
            await self.stream.drain(self._clock() + self.timeouts.send)
        except TimeoutError:
            raise errors.ClientGone("client stopped reading the response") from None

    def answer(self, ex: Exchange, page: pages.Page) -> bool:
        head = ex.head
        keep = self.can_continue(head)
        if keep:
            self.skip_end_of_request()
        ex.status = page.status
        ex.sent = self._write_page(page, head, close=not keep)
        return keep

    def page(self, ex: Exchange, page: pages.Page) -> None:
        ex.sent = self._write_page(page, ex.head, close=True)

    def abort(self) -> None:
        self.stream.abort()

    async def tunnel(self, ex: Exchange, conn: AppSide, response: ResponseHead) -> None:
        assert isinstance(conn, AppConnection)
        self.stream.on_eof = None  # half-closes are part of the tunnelled protocol
        out = headers.to_client(
            response.headers, upgrade=True, app=ex.app, host=ex.head.host, scheme=self.scheme
        )
        self.stream.write(response_head(101, response.reason, out))
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
        try:
            await tunnel.splice(self.stream, conn.stream, self.timeouts.read)
        except TimeoutError:
            assert ex.app is not None
            log.info("%s: idle tunnel closed after %gs", ex.app.name, self.timeouts.read)
        finally:
            self._tunnel = None
            conn.on_cut = None

    def continue_in_callbacks(self, ex: Exchange) -> bool:
        callbacks = self.callbacks
        assert callbacks is not None
        return callbacks.launch(ex)

    async def status_page(self, ex: Exchange) -> bool:
        return await statuspage.status_page(self, ex)

    # --- HTTP/1.1 framing and keep-alive
    def can_continue(self, head: RequestHead) -> bool:
        return (
            head.keep_alive
            and not head.upgrade
            and head.framing is Framing.NONE
            and not self.parser.dead
            and not self.closing
        )

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

    def plan_response(
        self, ex: Exchange, response: ResponseHead
    ) -> tuple[Framing, bool, list[bytes]]:
        """The framing towards the client, whether the connection carries another request,
        and the response head to send."""
        framing, keep, head = plan(
            ex.head, response, ex.app, reusable=self.reusable(ex), scheme=self.scheme
        )
        ex.status = response.status
        return framing, keep, [head]

    def reusable(self, ex: Exchange) -> bool:
        """Nothing on this side ends the connection after the exchange: sockgate is not
        stopping, the client's bytes still parse, and the request body was read whole (an app
        answering before it is through leaves the rest of the body, which cannot be told from
        the next request)."""
        return not self.closing and not self.parser.dead and ex.body_done
