"""One attempt's two directions in the task: the request body to the app as it arrives, and the
app's response (1xx, head, body or upgrade) to the client, with every fault named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors
from ..http import nothttp
from ..http.events import (
    END,
    Data,
    EndOfMessage,
    Event,
    Framing,
    ProtocolError,
    ResponseHead,
    Upgrade,
)
from ..http.serialise import LAST_CHUNK, chunk_header
from .phase import COMPLETE, TUNNEL, app_answered, move
from .sides import AppSide, Pool

if TYPE_CHECKING:
    from .forward import Exchange


class Retry(Exception):
    """The app closed a reused connection before reading our request: send it again."""


async def pump_body(ex: Exchange, conn: AppSide) -> None:
    """The request body, client to app, as it arrives. Failures abort the app connection and are
    kept in `ex.pump_error` for the response side to report."""
    assert ex.app is not None
    client = ex.client
    limit = ex.engine.config.body_limit(ex.app)
    chunked = ex.head.framing is Framing.CHUNKED
    total = 0
    try:
        while True:
            try:
                event = await client.next_body_event(client.clock() + client.timeouts.client_header)
            except TimeoutError:
                raise errors.ClientTimeout("the request body stalled") from None
            if event is None:
                raise errors.ClientGone("client closed during the request body")
            if isinstance(event, ProtocolError):
                raise event.error
            if isinstance(event, EndOfMessage):
                if chunked:
                    conn.send(LAST_CHUNK)
                ex.body_done = True
                return
            assert isinstance(event, Data)
            total += len(event.data)
            if limit is not None and total > limit:
                raise errors.BodyTooLarge(f"the body is larger than {limit} bytes")
            if chunked:
                conn.send_parts([chunk_header(len(event.data)), event.data, b"\r\n"])
            else:
                conn.send(event.data)
            try:
                await conn.drain(client.clock() + client.timeouts.send)
            except TimeoutError:
                raise _send_timeout(ex) from None
    except (errors.ClientError, errors.ClientGone, errors.AppSendTimeout) as exc:
        ex.pump_error = exc
        conn.close()
    except ConnectionError:
        pass  # the app closed while reading: the response side reports what it said


async def relay(
    ex: Exchange, upstream: Pool, conn: AppSide, *, retry_ok: bool, deadline: float | None
) -> bool:
    try:
        response = await _response_head(ex, upstream, conn, retry_ok=retry_ok, deadline=deadline)
    except errors.SockgateError as exc:
        conn.close()
        return ex.fail(exc)
    if response.status == 101:
        if not any(isinstance(e, Upgrade) for e in conn.parser.events):
            conn.close()
            reason = "101 without a protocol to switch to (no Upgrade header)"
            return ex.fail(bad_response(upstream, reason))
        return await _upgrade(ex, conn, response)
    return await _stream_response(ex, upstream, conn, response)


async def _response_head(
    ex: Exchange, upstream: Pool, conn: AppSide, *, retry_ok: bool, deadline: float | None
) -> ResponseHead:
    while True:
        event = await _app_event(ex, upstream, conn, retry_ok=retry_ok, deadline=deadline)
        deadline = None
        if isinstance(event, EndOfMessage):
            continue  # the end of a 1xx
        if not isinstance(event, ResponseHead):
            raise bad_response(upstream, f"unexpected {type(event).__name__} before a head")
        if event.status == 101 and not ex.head.upgrade:
            raise bad_response(upstream, "101 to a request that did not ask to upgrade")
        if not event.informational:
            return event
        ex.client.interim(ex, event)


async def _app_event(
    ex: Exchange, upstream: Pool, conn: AppSide, *, retry_ok: bool, deadline: float | None
) -> Event:
    """The next event of the app's response before its head is through, errors named."""
    timeouts = ex.client.timeouts
    if deadline is None:
        deadline = ex.client.clock() + timeouts.read
    try:
        event = await conn.next_event(deadline)
    except TimeoutError:
        raise blame(ex) or read_timeout(upstream, timeouts.read) from None
    except ConnectionError:
        # On a Unix socket a reset means the app closed with our request unread: on a
        # reused connection, or on a new one it had in its listen queue when it stopped
        # (a restart under load). Unread, a request without a body may go again.
        if retry_ok and _unanswered(conn) and ex.head.framing is Framing.NONE:
            raise Retry from None
        raise blame(ex) or closed_early(conn, upstream) from None
    if event is None:
        fault = blame(ex)
        if fault is not None:
            raise fault
        if retry_ok and conn.reused and _unanswered(conn) and ex.resendable():
            raise Retry
        raise closed_early(conn, upstream)
    if isinstance(event, ProtocolError):
        raise bad_response(upstream, nothttp.detail(event.reason, event.first))
    return event


def blame(ex: Exchange) -> errors.SockgateError | None:
    """When the app side failed because the client side did: the client's fault."""
    if ex.client_left:
        return errors.ClientGone("client closed the connection")
    return ex.pump_error


async def _stream_response(
    ex: Exchange, upstream: Pool, conn: AppSide, response: ResponseHead
) -> bool:
    ex.client.begin(ex, response)
    counts = ex.engine.stats.app(upstream.app.name)
    ex.stream = is_event_stream(response)
    if ex.stream:
        counts.sse += 1
    try:
        await _stream_body(ex, upstream, conn, response)
    except (errors.SockgateError, ConnectionError) as exc:
        conn.close()
        if not app_answered(ex.phase) and isinstance(exc, errors.SockgateError):
            ex.status = 0
            return ex.fail(exc)  # nothing went out yet: a page still can
        # The head is out: the only honest signal left is to close without finishing.
        ex.cut(exc)
        return False
    finally:
        if ex.stream:
            counts.sse -= 1
    ex.release_app(response)
    ex.phase = move(ex.phase, COMPLETE)
    return ex.keep and ex.body_done


async def _stream_body(ex: Exchange, upstream: Pool, conn: AppSide, response: ResponseHead) -> None:
    """Relay the body. What the parser already holds goes out with the head in one write;
    before waiting on the app, everything gathered so far is sent, so the head and each SSE
    event leave as soon as they arrive."""
    client = ex.client
    while True:
        if not conn.parser.events:
            await client.flush(ex)
        event = await _body_event(ex, upstream, conn, response)
        if isinstance(event, EndOfMessage):
            client.end(ex)
            await client.flush(ex)
            return
        ex.sent += len(event.data)
        client.body(ex, event.data)


async def _body_event(
    ex: Exchange, upstream: Pool, conn: AppSide, response: ResponseHead
) -> Data | EndOfMessage:
    read = ex.client.timeouts.read
    try:
        event = await conn.next_event(ex.client.clock() + read)
    except TimeoutError:
        raise blame(ex) or read_timeout(upstream, read) from None
    app = upstream.app
    if event is None:
        fault = blame(ex)
        if fault is not None:
            raise fault  # our own abort of the app connection is no end of a body
        if conn.cut_off:
            raise retired(app.name, str(app.socket))
        if response.framing is not Framing.UNTIL_CLOSE:
            raise errors.AppCutShort(app.name, str(app.socket), "the body was incomplete")
        return END  # close-delimited: the app's close is the end
    if isinstance(event, ProtocolError):
        raise errors.AppCutShort(app.name, str(app.socket), event.reason)
    assert isinstance(event, Data | EndOfMessage), event
    return event


async def _upgrade(ex: Exchange, conn: AppSide, response: ResponseHead) -> bool:
    ex.status = 101
    ex.phase = move(ex.phase, TUNNEL)
    assert ex.app is not None
    counts = ex.engine.stats.app(ex.app.name)
    counts.upgrades += 1
    ex.stream = True
    try:
        await ex.client.tunnel(ex, conn, response)
    finally:
        counts.upgrades -= 1
        conn.close()
    ex.phase = move(TUNNEL, COMPLETE)
    return False


def is_event_stream(response: ResponseHead) -> bool:
    for name, value in response.headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value.lstrip().lower().startswith(b"text/event-stream")
    return False


def _unanswered(conn: AppSide) -> bool:
    """The app sent nothing back, and the end is the app's (not a cut after a reload)."""
    return conn.received == 0 and not conn.cut_off


def retired(app: str, socket: str) -> errors.UpstreamError:
    return errors.AppRetired(app, socket, "the drain deadline after a reload passed")


def closed_early(conn: AppSide, upstream: Pool) -> errors.UpstreamError:
    app = upstream.app
    if conn.cut_off:
        return retired(app.name, str(app.socket))
    if conn.received:
        return errors.AppBadResponse(app.name, str(app.socket), "closed in the middle of the head")
    return errors.AppClosedEarly(app.name, str(app.socket))


def bad_response(upstream: Pool, reason: str) -> errors.UpstreamError:
    return errors.AppBadResponse(upstream.app.name, str(upstream.app.socket), reason)


def read_timeout(upstream: Pool, seconds: float) -> errors.UpstreamError:
    app = upstream.app
    return errors.AppReadTimeout(app.name, str(app.socket), f"silent for {seconds:g}s")


def _send_timeout(ex: Exchange) -> errors.UpstreamError:
    assert ex.app is not None
    return errors.AppSendTimeout(ex.app.name, str(ex.app.socket), "the app stopped reading")
