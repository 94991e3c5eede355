"""One exchange: a request, the decision made for it once, and what answers it.

An exchange is served by the client connection's task (`run`), or partly in the client's
callbacks (the HTTP/1.1 fast path in `engine.client`), which then hand it back here with its
phase saying how far it got. Either way the same decision, the same app connection and the same
rules apply: routing, the Host check and the pool look-up happen once, in `decide()` and the
constructor. The client is reached through `sides.ClientSide` (its protocol's framing is its
own), the app through `sides.AppSide` and `sides.Pool`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Final

from .. import errors
from ..config import App
from ..engine.shared import Engine
from ..http import pages
from ..http.events import (
    Framing,
    RequestHead,
    ResponseHead,
)
from ..http.headers import app_request
from ..http.routing import (
    Dashboard,
    Decision,
    Forward,
    Misdirected,
    NotFound,
    Redirect,
    Rejected,
)
from .phase import ANSWERED, CUT, ROUTED, SENT, Phase, move
from .phase import name as phase_name
from .relay import Retry, closed_early, pump_body, relay
from .sides import AppSide, ClientSide, Pool

log = logging.getLogger(__name__)

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# nginx logs an exchange the client abandoned as 499.
CLIENT_CLOSED: Final = 499
# A browser navigating to an app that is down gets a page that loads itself again this often.
RETRY_PAGE_STATUS: Final = 503
RETRY_EVERY: Final = 2
# Compiled, a Final is a C static: no lookup of `time` on the time module at each call.
_wall_time: Final = time.time


def decide(engine: Engine, head: RequestHead) -> Decision:
    """What to do with a request: the Host check, then the router. Made once per request."""
    hosts = engine.hosts
    if not hosts.allows(head.host):
        assert head.host is not None
        return Misdirected(*hosts.refusal(head.host))
    return engine.router.route(head.target, head.host)


class Exchange:
    """One request's life. Its fields are what both ways of driving it share."""

    head: RequestHead
    decision: Decision
    client: ClientSide
    engine: Engine
    phase: Phase
    started: float
    app: App | None
    upstream: Pool | None
    conn: AppSide | None
    client_ip: str
    request: bytes  # the request head as the app gets it
    answer_by: float | None  # the deadline for the app's first answer, if set by the callbacks
    # A body the fast path streams: the response, and the bytes of it still to come.
    response: ResponseHead | None
    remaining: int
    keep: bool  # the client connection carries another request after this one
    status: int
    sent: int
    pump_error: errors.SockgateError | None
    body_done: bool  # the request body went to the app whole (or there was none)
    client_left: bool
    # For the status counters: a long-lived stream (kept out of latency), the fault that ended it.
    stream: bool
    fault: str | None

    def __init__(
        self, head: RequestHead, decision: Decision, client: ClientSide, engine: Engine
    ) -> None:
        self.head = head
        self.decision = decision
        self.client = client
        self.engine = engine
        self.client_ip = client.client_ip
        self.phase = ROUTED
        self.started = _wall_time()
        self.app = None
        self.upstream = None
        if type(decision) is Forward:
            self.app = decision.app
            self.upstream = engine.upstream(decision.app)
        self.conn = None
        self.request = b""
        self.answer_by = None
        self.response = None
        self.remaining = 0
        self.keep = False
        self.status = 0
        self.sent = 0
        self.pump_error = None
        self.body_done = False
        self.client_left = False
        self.stream = False
        self.fault = None

    def __repr__(self) -> str:
        return f"<Exchange {_request_line(self.head)!r} {phase_name(self.phase)}>"

    async def run(self) -> bool | None:
        """Serve the request from where it stands: decided (no app connection yet), or handed
        over by the client's callbacks with its app connection, its request sent (SENT) or not.
        True if the client connection carries another request, None if the exchange goes on in
        the client's callbacks."""
        handed = False
        try:
            if self.conn is None:
                result = await self._serve()
            else:
                assert self.upstream is not None
                result = await self._send(self.upstream, self.conn, deadline=self.answer_by)
            handed = result is None
            return result
        finally:
            if not handed:
                self.log()

    async def _serve(self) -> bool | None:
        decision = self.decision
        if type(decision) is Forward:
            if decision.app.command is not None:
                return await self._forward_supervised(decision)
            return await self._forward(decision)
        if type(decision) is Dashboard:
            return await self.client.status_page(self)
        return self.answer(self.page_for(decision))

    def page_for(self, decision: Decision) -> pages.Page:
        if type(decision) is Redirect:
            return pages.Page(301, "this app lives under its prefix", location=decision.location)
        if type(decision) is Rejected:
            return pages.Page(400, decision.reason)
        if type(decision) is Misdirected:
            return pages.Page(421, decision.title, decision.detail)
        if type(decision) is NotFound and decision.host:
            hosts = ", ".join(self.engine.router.host_names) or "none"
            return pages.Page(404, f"no app has the host {decision.host}", f"app hosts: {hosts}")
        return pages.Page(404, "no app is routed at this path", detail=_routes(self.engine))

    def answer(self, page: pages.Page) -> bool:
        """sockgate's own answer to a request it does not forward."""
        self.phase = move(self.phase, ANSWERED)
        return self.client.answer(self, page)

    # --- forwarding
    async def _forward_supervised(self, route: Forward) -> bool | None:
        """An app sockgate runs: started if need be (the request waits until it is ready), and
        not idle while the exchange (or its tunnel) lasts."""
        apps = self.engine.apps
        with apps.in_use(route.app):
            failure = await apps.ensure_ready(route.app)
            if failure is not None:
                return self.fail(failure)
            # The exchange must end inside in_use: not in callbacks after this returns.
            return await self._forward(route, callbacks=not on_demand(route.app))

    async def _forward(self, route: Forward, *, callbacks: bool = True) -> bool | None:
        head, app, client = self.head, route.app, self.client
        limit = self.engine.config.body_limit(app)
        if (
            limit is not None
            and head.framing is Framing.LENGTH
            and (head.content_length or 0) > limit
        ):
            return self.fail(errors.BodyTooLarge(f"the body is larger than {limit} bytes"))
        queued = client.queued_error()
        if queued is not None:
            # The body is already known to be malformed: the app never sees this request.
            return self.fail(queued)
        upstream = self.upstream
        assert upstream is not None
        self.request = self.app_request(route)
        if head.framing is Framing.NONE:
            client.skip_end_of_request()
            self.body_done = True
            if callbacks and not head.upgrade:
                return await self._forward_in_callbacks(upstream)
        return await self._send(upstream)

    async def _forward_in_callbacks(self, upstream: Pool) -> bool | None:
        """A request without a body on a new (or pooled) connection: the response comes back
        through the client's callbacks, as if the connection had been pooled."""
        try:
            conn = await upstream.acquire(retryable=self.resendable())
        except errors.UpstreamError as exc:
            return self.fail(exc)
        self.conn = conn
        if self.client.continue_in_callbacks(self):
            return None
        return await self._send(upstream, conn)

    def app_request(self, route: Forward) -> bytes:
        return app_request(
            self.head,
            route.target,
            route.app,
            client_ip=self.client_ip,
            default_host=self.engine.default_host,
            scheme=self.client.scheme,
        )

    async def _send(
        self, upstream: Pool, conn: AppSide | None = None, *, deadline: float | None = None
    ) -> bool:
        """Send on `conn` (already sent if the phase is SENT) or a pooled or new connection;
        once more on a new one if a reused one turns out closed."""
        retryable = self.resendable()
        for attempt in (1, 2):
            if conn is None:
                try:
                    conn = await upstream.acquire(retryable=retryable, fresh=attempt == 2)
                except errors.UpstreamError as exc:
                    return self.fail(exc)
                self.conn = conn
            try:
                return await self._over(upstream, conn, retry_ok=attempt == 1, deadline=deadline)
            except Retry:
                log.info("%s: reused connection was closed by the app; retrying", upstream.app.name)
                if self.phase == SENT:
                    self.phase = move(SENT, ROUTED)
                conn, deadline = None, None
        raise AssertionError("unreachable")

    async def _over(
        self, upstream: Pool, conn: AppSide, *, retry_ok: bool, deadline: float | None
    ) -> bool:
        """One attempt on one app connection; `deadline` for the app's first answer if not
        the read timeout from now."""
        head, client = self.head, self.client
        conn.parser.head_request = head.method == b"HEAD"
        pump: asyncio.Task[None] | None = None
        client.watch_client(self)
        # What a finally would do, after the try: the pump is awaited outside any except or
        # finally block, which the compiled build needs (hatch_build.py).
        error: BaseException | None = None
        result = False
        try:
            try:
                if self.phase == ROUTED:
                    conn.send(self.request)
                    self.phase = move(ROUTED, SENT)
            except ConnectionError:
                # Closed before our request went out (reused, or new and dropped from the
                # listen queue of an app that stopped): nothing reached the app, send again.
                conn.close()
                if retry_ok and not conn.cut_off:
                    raise Retry from None
                result = self.fail(closed_early(conn, upstream))
            else:
                if head.framing is not Framing.NONE:
                    pump = asyncio.create_task(pump_body(self, conn))
                result = await relay(self, upstream, conn, retry_ok=retry_ok, deadline=deadline)
        except BaseException as exc:  # re-raised below, once the attempt is cleaned up
            error = exc
        client.watch_client(None)
        if conn.active:
            conn.close()
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if error is not None:
            raise error
        return result

    def resendable(self) -> bool:
        return self.head.method in IDEMPOTENT and self.head.framing is Framing.NONE

    def release_app(self, response: ResponseHead) -> None:
        """The app connection back to the pool if the exchange ended cleanly on a connection
        the app keeps."""
        conn = self.conn
        assert conn is not None
        if reusable(self, response, conn.parser.dead):
            conn.release()
        else:
            conn.close()

    # --- answers and errors
    def fail(self, error: errors.SockgateError) -> bool:
        """Answer with sockgate's own page for `error` (nothing of a response was sent yet)."""
        if isinstance(error, errors.ClientGone):
            self.note_fault(error)
            self.phase = move(self.phase, CUT)
            return False
        head = self.head
        status = errors.status_for(error, navigation=pages.is_navigation(head.method, head.headers))
        self.status = status
        self.note_fault(error)
        if isinstance(error, errors.UpstreamError):
            page = pages.Page(status, error.fault, error.detail, error.app, error.socket)
            if status == RETRY_PAGE_STATUS:
                detail = f"{error.detail}; this page tries again every {RETRY_EVERY}s"
                page = dataclasses.replace(page, detail=detail, refresh=RETRY_EVERY)
        else:
            page = pages.Page(status, str(error))
        self.phase = move(self.phase, ANSWERED)
        self.client.page(self, page)
        return False

    def cut(self, error: BaseException) -> None:
        """End an exchange whose response has started: the client connection is aborted."""
        self.note_fault(error)
        self.phase = move(self.phase, CUT)
        self.client.abort()

    def note_fault(self, error: BaseException) -> None:
        if isinstance(error, errors.ClientGone | ConnectionError):
            self.status = self.status or CLIENT_CLOSED
            return
        if isinstance(error, errors.SockgateError):
            self.status = self.status or errors.status_for(error)
        if isinstance(error, errors.UpstreamError):
            self.fault = f"{error.fault}: {error.detail}" if error.detail else error.fault
            log.error("%s (request %s)", error, _request_line(self.head).decode("latin-1"))

    def log(self) -> None:
        now = _wall_time()
        head = self.head
        app = self.app
        name = None
        if app is not None:  # the status page's counters: O(1), bounded
            name = app.name
            self.engine.stats.app(name).record(
                now,
                head.method,
                head.target,
                self.status,
                now - self.started,
                self.stream,
                self.fault,
            )
        self.engine.access_log.log(  # positional: once per exchange
            self.client_ip,
            _request_line(head),
            self.status,
            self.sent,
            head.referer,
            head.user_agent,
            self.started,
            name,
            now,
        )


def reusable(ex: Exchange, response: ResponseHead, parser_dead: bool) -> bool:
    """Whether the app connection can carry another exchange after `response`: it ended
    cleanly, the request went whole, and the app keeps the connection."""
    return (
        ex.body_done
        and response.keep_alive
        and not parser_dead
        and response.framing is not Framing.UNTIL_CLOSE
    )


def on_demand(app: App) -> bool:
    return app.command is not None and app.command.on_demand


def _request_line(head: RequestHead) -> bytes:
    return b"%s %s HTTP/%s" % (head.method, head.target, head.version)


def _routes(engine: Engine) -> str:
    apps = engine.router.apps
    if not apps:
        return "no apps are configured"
    return "routes: " + ", ".join(f"{a.prefix} -> {a.name}" for a in apps)
