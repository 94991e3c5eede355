"""One client connection: read requests, route them, forward, stream back, upgrade.

Every exchange ends in exactly one of: a complete response, a page sockgate writes itself
(before any byte of the app's response), or a closed client connection (after it started).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import Enum, auto

from . import errors, headers, http1, pages, routing, tunnel
from .accesslog import AccessLog
from .config import App, Config
from .discovery import Discovery
from .hosts import HostPolicy
from .http1 import Event, Framing, RequestHead, ResponseHead
from .managed import AppManager
from .stream import Stream
from .upstream import AppConnection, ConnState, Upstream

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# nginx logs an exchange the client abandoned as 499.
CLIENT_CLOSED = 499


class Engine:
    """What every connection shares: config, routes, app pools, logs."""

    def __init__(
        self,
        config: Config,
        access_log: AccessLog | None = None,
        apps: AppManager | None = None,
    ) -> None:
        self.config = config
        self.discovery = (
            None if config.sockets_dir is None else Discovery(config.sockets_dir, config.apps)
        )
        lookup = None if self.discovery is None else self.discovery.lookup
        self.router = routing.Router(config.apps, lookup)
        self.upstreams = {app.name: Upstream(app, config.timeouts.connect) for app in config.apps}
        # The apps this process runs; a worker's are run by its supervisor.
        self.apps = apps or AppManager((), config.logs_dir)
        self.access_log = access_log or AccessLog(None)
        self.default_host = str(config.listen).encode()
        self.hosts = HostPolicy(config.listen.host, config.allowed_hosts)

    def upstream(self, app: App) -> Upstream:
        """The pool for an app; a discovered app's is made on its first request."""
        found = self.upstreams.get(app.name)
        if found is None or found.app is not app:
            if found is not None:
                found.close()  # a discovered socket that went away and came back
            found = self.upstreams[app.name] = Upstream(app, self.config.timeouts.connect)
        return found

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()


class ClientState(Enum):
    WAITING = auto()  # for a request head
    ACTIVE = auto()  # an exchange is under way
    TUNNEL = auto()  # upgraded: bytes flow both ways
    CLOSED = auto()


@dataclass(slots=True)
class _Exchange:
    head: RequestHead
    started: float = field(default_factory=time.time)
    app: App | None = None
    status: int = 0
    sent: int = 0
    pump_error: errors.SockgateError | None = None
    body_done: bool = False
    client_left: bool = False
    head_sent: bool = False


class _Retry(Exception):
    """The app closed a reused connection before reading our request: send it again."""


class ClientConnection:
    def __init__(self, stream: Stream, engine: Engine) -> None:
        self.stream = stream
        self.engine = engine
        self.timeouts = engine.config.timeouts
        self.parser = http1.RequestParser()
        self.loop = asyncio.get_running_loop()
        self.state = ClientState.WAITING
        self.closing = False
        self._tunnel: AppConnection | None = None
        peer = stream.peer()
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"

    def __repr__(self) -> str:
        return f"<ClientConnection {self.client_ip} {self.state.name}>"

    async def run(self) -> None:
        try:
            first = True
            while not self.closing:
                self.state = ClientState.WAITING
                head = await self._read_head(first)
                if head is None:
                    return
                first = False
                self.state = ClientState.ACTIVE
                keep = await self._exchange(head)
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
            # Cut mid-exchange (the shutdown deadline, an error): a reset, never a FIN that a
            # close-delimited response would read as its proper end.
            if self.state is ClientState.ACTIVE:
                self.stream.abort()
            else:
                self.stream.close()
            self.state = ClientState.CLOSED

    def shutdown(self) -> None:
        """Stop after what is under way: now if idle or tunnelling, else after the exchange."""
        self.closing = True
        if self.state in (ClientState.WAITING, ClientState.TUNNEL):
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

    async def _read_head(self, first: bool) -> RequestHead | None:
        t = self.timeouts
        parser = self.parser
        started = bool(parser.events)
        deadline = self.loop.time() + (t.client_header if first else t.keepalive)
        try:
            while not parser.events:
                data = await self.stream.read(deadline)
                if not data:
                    return None
                if not started:
                    started = True
                    deadline = self.loop.time() + t.client_header
                parser.feed(data)
        except TimeoutError:
            if started:
                error = errors.ClientTimeout("the request head did not arrive in time")
                self._refuse(error, None)
            return None
        event = parser.events.popleft()
        if isinstance(event, http1.ProtocolError):
            self._refuse(event.error, None)
            return None
        assert isinstance(event, RequestHead), event
        return event

    def _refuse(self, error: errors.ClientError, head: RequestHead | None) -> None:
        """Answer a request we will not forward, and close."""
        page = pages.Page(error.status, str(error))
        self._write_page(page, head, close=True)
        if head is None:
            self._log_line(b"-", page.status, time.time(), None, None)

    # --- one exchange
    async def _exchange(self, head: RequestHead) -> bool:
        """Handle one request; True if the connection can carry another."""
        ex = _Exchange(head)
        try:
            hosts = self.engine.hosts
            if not hosts.allows(head.host):
                assert head.host is not None
                return self._answer_locally(ex, pages.Page(421, *hosts.refusal(head.host)))
            decision = self.engine.router.route(head.target)
            if isinstance(decision, routing.Forward):
                if decision.app.command is not None:
                    return await self._forward_supervised(ex, decision)
                return await self._forward(ex, decision)
            return self._answer_locally(ex, self._page_for(decision))
        finally:
            self._log(ex)

    def _page_for(self, decision: routing.Decision) -> pages.Page:
        if isinstance(decision, routing.Redirect):
            return pages.Page(301, "this app lives under its prefix", location=decision.location)
        if isinstance(decision, routing.Rejected):
            return pages.Page(400, decision.reason)
        return pages.Page(404, "no app is routed at this path", detail=_routes(self.engine))

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
        assert isinstance(event, http1.EndOfMessage), event

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
    async def _forward_supervised(self, ex: _Exchange, route: routing.Forward) -> bool:
        """An app sockgate runs: started if need be (the request waits until it is ready), and
        not idle while the exchange (or its tunnel) lasts."""
        apps = self.engine.apps
        with apps.in_use(route.app):
            failure = await apps.ensure_ready(route.app)
            if failure is not None:
                ex.app = route.app
                return self._fail(ex, failure)
            return await self._forward(ex, route)

    async def _forward(self, ex: _Exchange, route: routing.Forward) -> bool:
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
        request = http1.request_head(
            head.method,
            route.target,
            headers.to_app(
                head, app, client_ip=self.client_ip, default_host=self.engine.default_host
            ),
        )
        retryable = head.method in IDEMPOTENT and head.framing is Framing.NONE
        if head.framing is Framing.NONE:
            self._skip_end_of_request()
            ex.body_done = True
        for attempt in (1, 2):
            try:
                conn = await upstream.acquire(retryable=retryable, fresh=attempt == 2)
            except errors.UpstreamError as exc:
                return self._fail(ex, exc)
            try:
                return await self._over(ex, upstream, conn, request, retry_ok=attempt == 1)
            except _Retry:
                log.info("%s: reused connection was closed by the app; retrying", app.name)
        raise AssertionError("unreachable")

    async def _over(
        self,
        ex: _Exchange,
        upstream: Upstream,
        conn: AppConnection,
        request: bytes,
        *,
        retry_ok: bool,
    ) -> bool:
        """One attempt on one app connection."""
        head = ex.head
        conn.parser.head_request = head.method == b"HEAD"
        pump: asyncio.Task[None] | None = None
        self.stream.on_eof = lambda: self._client_eof(ex, conn)
        try:
            try:
                conn.stream.write(request)
            except ConnectionError:
                conn.close()
                if retry_ok and conn.reused:
                    raise _Retry from None
                return self._fail(ex, _closed_early(conn, upstream))
            if head.framing is not Framing.NONE:
                pump = asyncio.create_task(self._pump_body(ex, conn))
            return await self._relay(ex, upstream, conn, retry_ok=retry_ok)
        finally:
            self.stream.on_eof = None
            if conn.state is ConnState.ACTIVE:
                conn.close()
            if pump is not None and not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)

    def _queued_error(self) -> errors.ClientError | None:
        """A framing error already parsed within the current request's body."""
        for event in self.parser.events:
            if isinstance(event, http1.EndOfMessage):
                return None
            if isinstance(event, http1.ProtocolError):
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
                    event = await self._next_event(self.loop.time() + self.timeouts.client_header)
                except TimeoutError:
                    raise errors.ClientTimeout("the request body stalled") from None
                if event is None:
                    raise errors.ClientGone("client closed during the request body")
                if isinstance(event, http1.ProtocolError):
                    raise event.error
                if isinstance(event, http1.EndOfMessage):
                    if chunked:
                        conn.stream.write(http1.LAST_CHUNK)
                    ex.body_done = True
                    return
                assert isinstance(event, http1.Data)
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
                    await conn.stream.drain(self.loop.time() + self.timeouts.send)
                except TimeoutError:
                    raise _send_timeout(ex) from None
        except (errors.ClientError, errors.ClientGone, errors.AppSendTimeout) as exc:
            ex.pump_error = exc
            conn.close()
        except ConnectionError:
            pass  # the app closed while reading: the response side reports what it said

    async def _relay(
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, *, retry_ok: bool
    ) -> bool:
        try:
            response = await self._response_head(ex, upstream, conn, retry_ok=retry_ok)
        except errors.SockgateError as exc:
            conn.close()
            return self._fail(ex, exc)
        if response.status == 101:
            if not any(isinstance(e, http1.Upgrade) for e in conn.parser.events):
                conn.close()
                reason = "101 without a protocol to switch to (no Upgrade header)"
                return self._fail(ex, _bad_response(upstream, reason))
            return await self._upgrade(ex, conn, response)
        return await self._stream_response(ex, upstream, conn, response)

    async def _response_head(
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, *, retry_ok: bool
    ) -> ResponseHead:
        while True:
            event = await self._app_event(ex, upstream, conn, retry_ok=retry_ok)
            if isinstance(event, http1.EndOfMessage):
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
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, *, retry_ok: bool
    ) -> Event:
        """The next event of the app's response before its head is through, errors named."""
        try:
            event = await conn.next_event(self.loop.time() + self.timeouts.read)
        except TimeoutError:
            raise self._blame(ex) or _read_timeout(upstream, self.timeouts.read) from None
        except ConnectionError:
            # On a Unix socket a reset means the app closed with our request unread.
            if retry_ok and conn.reused and conn.received == 0 and not _body_started(ex):
                raise _Retry from None
            raise self._blame(ex) or _closed_early(conn, upstream) from None
        if event is None:
            blame = self._blame(ex)
            if blame is not None:
                raise blame
            if retry_ok and conn.reused and conn.received == 0 and _resendable(ex):
                raise _Retry
            raise _closed_early(conn, upstream)
        if isinstance(event, http1.ProtocolError):
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
        head = ex.head
        framing, out = _client_framing(head, response)
        keep = (
            head.keep_alive
            and not head.upgrade
            and not self.closing
            and not self.parser.dead
            and framing is not Framing.UNTIL_CLOSE
            # An app answering before the request body is through: the rest of the body
            # cannot be told from the next request, so this connection ends with the answer.
            and ex.body_done
        )
        if not keep:
            out.append((b"Connection", b"close"))
        elif head.version == b"1.0":
            out.append((b"Connection", b"keep-alive"))
        ex.status = response.status
        pending = [http1.response_head(response.status, response.reason, out)]
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
        finished = ex.body_done and response.keep_alive and not conn.parser.dead
        if finished and response.framing is not Framing.UNTIL_CLOSE:
            upstream.release(conn)
        else:
            conn.close()
        return keep and ex.body_done

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
            if isinstance(event, http1.EndOfMessage):
                if chunked:
                    pending.append(http1.LAST_CHUNK)
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
            await self.stream.drain(self.loop.time() + self.timeouts.send)
        except TimeoutError:
            raise errors.ClientGone("client stopped reading the response") from None

    async def _body_event(
        self, ex: _Exchange, upstream: Upstream, conn: AppConnection, response: ResponseHead
    ) -> http1.Data | http1.EndOfMessage:
        try:
            event = await conn.next_event(self.loop.time() + self.timeouts.read)
        except TimeoutError:
            raise self._blame(ex) or _read_timeout(upstream, self.timeouts.read) from None
        if event is None:
            blame = self._blame(ex)
            if blame is not None:
                raise blame  # our own abort of the app connection is no end of a body
            if response.framing is not Framing.UNTIL_CLOSE:
                raise errors.AppCutShort(
                    upstream.app.name, str(upstream.app.socket), "the body was incomplete"
                )
            return http1.END  # close-delimited: the app's close is the end
        if isinstance(event, http1.ProtocolError):
            raise errors.AppCutShort(upstream.app.name, str(upstream.app.socket), event.reason)
        assert isinstance(event, http1.Data | http1.EndOfMessage), event
        return event

    async def _upgrade(self, ex: _Exchange, conn: AppConnection, response: ResponseHead) -> bool:
        ex.status = 101
        self.stream.on_eof = None  # half-closes are part of the tunnelled protocol
        self._write_client(
            http1.response_head(
                101, response.reason, headers.to_client(response.headers, upgrade=True)
            )
        )
        for source, stream in (
            (self.parser.events, self.stream),
            (conn.parser.events, conn.stream),
        ):
            for event in source:
                if isinstance(event, http1.Upgrade):
                    stream.unread(event.trailing)
            source.clear()
        self.state = ClientState.TUNNEL
        self._tunnel = conn
        try:
            await tunnel.splice(self.stream, conn.stream, self.timeouts.read)
        except TimeoutError:
            log.info("%s: idle tunnel closed after %gs", ex.app and ex.app.name, self.timeouts.read)
        finally:
            self._tunnel = None
            conn.close()
        return False

    # --- answers and errors
    def _fail(self, ex: _Exchange, error: errors.SockgateError) -> bool:
        """Answer with sockgate's own page for `error` (nothing of a response was sent yet)."""
        self._note_fault(ex, error)
        if isinstance(error, errors.ClientGone):
            return False
        status = errors.status_for(error)
        if isinstance(error, errors.UpstreamError):
            page = pages.Page(status, error.fault, error.detail, error.app, error.socket)
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
            log.error("%s (request %s)", error, _request_line(ex.head).decode("latin-1"))

    def _write_client(self, data: bytes) -> None:
        self.stream.write(data)

    def _log(self, ex: _Exchange) -> None:
        self._log_line(
            _request_line(ex.head),
            ex.status,
            ex.started,
            ex.head,
            ex.app.name if ex.app else None,
            ex.sent,
        )

    def _log_line(
        self,
        request_line: bytes,
        status: int,
        started: float,
        head: RequestHead | None,
        app: str | None,
        sent: int = 0,
    ) -> None:
        referer = user_agent = None
        for name, value in head.headers if head else ():
            lower = name.lower()
            if lower == b"referer":
                referer = value
            elif lower == b"user-agent":
                user_agent = value
        self.engine.access_log.log(
            client=self.client_ip,
            request_line=request_line,
            status=status,
            sent=sent,
            referer=referer,
            user_agent=user_agent,
            started=started,
            app=app,
        )


def _client_framing(head: RequestHead, response: ResponseHead) -> tuple[Framing, http1.Headers]:
    out = headers.to_client(response.headers, upgrade=False)
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


def _closed_early(conn: AppConnection, upstream: Upstream) -> errors.UpstreamError:
    app = upstream.app
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
