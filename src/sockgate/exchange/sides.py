"""What an exchange needs from its two sides: the client (whatever protocol it speaks) and the
app (one connection, and the pool it comes from). Typing only: the HTTP/1.1 client connection,
`engine.upstream.AppConnection` and `Upstream` are the real sides; tests/support/fakes.py has
in-memory ones.

The client side owns the client protocol's framing: an exchange hands it the app's response
head and body as events (`begin`, `body`, `end`) and never sees HTTP/1.1's chunked encoding,
`Connection` headers or keep-alive; an HTTP/2 connection implements the same calls on a stream.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from ..config import App, Timeouts
from ..errors import ClientError
from ..http.events import Event, ResponseHead

if TYPE_CHECKING:
    from ..http import pages
    from .forward import Exchange


class ClientSide(Protocol):
    """The client connection an exchange came in on."""

    timeouts: Timeouts
    client_ip: str
    scheme: bytes  # b"http" or b"https": what the app is told in X-Forwarded-Proto
    closing: bool  # sockgate is stopping: this is the connection's last exchange

    def clock(self) -> float: ...

    # --- the request, in
    async def next_body_event(self, deadline: float) -> Event | None:
        """The next event of the request body (Data, EndOfMessage or a ProtocolError); None
        when the client closed. TimeoutError past `deadline`."""

    def queued_error(self) -> ClientError | None:
        """A framing error already parsed within the request's body (it came with the head)."""

    def skip_end_of_request(self) -> None:
        """The request has no body: its end is consumed."""

    def watch_client(self, ex: Exchange | None) -> None:
        """While the app works on `ex` (None: no longer): a client that leaves sets
        `ex.client_left` and closes `ex.conn`, so the app's work stops."""

    # --- the response, out
    def interim(self, ex: Exchange, response: ResponseHead) -> None:
        """A 1xx response, passed on if the client's protocol can take it."""

    def begin(self, ex: Exchange, response: ResponseHead) -> None:
        """Queue the response head; sets `ex.keep` and `ex.status`."""

    def body(self, ex: Exchange, data: bytes) -> None:
        """Queue a piece of the response body."""

    def end(self, ex: Exchange) -> None:
        """Queue the end of the response (no trailers)."""

    async def flush(self, ex: Exchange) -> None:
        """Send what is queued (the exchange then moves to RESPONDING) and wait until the
        client has read it, up to the send timeout (then errors.ClientGone)."""

    def answer(self, ex: Exchange, page: pages.Page) -> bool:
        """Answer with a page of sockgate's own in place of the app (a redirect, a 404...);
        True if the connection carries another request."""

    def page(self, ex: Exchange, page: pages.Page) -> None:
        """Answer with a page of sockgate's own; the connection ends after it."""

    def abort(self) -> None:
        """End the connection without finishing: the client must not take what it got for a
        whole response."""

    async def tunnel(self, ex: Exchange, conn: AppSide, response: ResponseHead) -> None:
        """Pass the app's 101 on and relay bytes both ways until one side ends."""

    def continue_in_callbacks(self, ex: Exchange) -> bool:
        """Hand a request without a body, sent on `ex.conn`, to the callbacks that finish it
        without a task (the HTTP/1.1 fast path); False when the client cannot."""

    async def status_page(self, ex: Exchange) -> bool:
        """sockgate's own status page, status.json or event stream (a Dashboard decision)."""


class AppParser(Protocol):
    events: deque[Event]
    head_request: bool  # the request was HEAD: the response has no body whatever it says
    dead: bool  # what the app sent is no longer HTTP: the connection cannot be reused


class AppSide(Protocol):
    """One connection to an app, carrying one exchange at a time."""

    @property
    def parser(self) -> AppParser:
        """What the app sends back, parsed."""

    @property
    def reused(self) -> bool:
        """It carried an exchange before (it came from the pool)."""

    @property
    def received(self) -> int:
        """Bytes of the current response so far."""

    @property
    def cut_off(self) -> bool:
        """Cut by sockgate (a reload retired the app): its end is no fault of the app."""

    @property
    def active(self) -> bool:
        """Still carrying the exchange (not closed, not back in the pool)."""

    async def next_event(self, deadline: float | None = None) -> Event | None:
        """The next response event, None when the app closed; TimeoutError past `deadline`."""

    def send(self, data: bytes) -> None:
        """ConnectionError when the app's end is closed."""

    def send_parts(self, parts: list[bytes]) -> None: ...

    async def drain(self, deadline: float) -> None:
        """Until the app has taken what was sent; TimeoutError past `deadline`."""

    def release(self) -> None:
        """Back to its pool after a complete exchange (closed if it cannot be reused)."""

    def close(self) -> None: ...


class Pool(Protocol):
    """An app's connections: pooled ones and new ones, held while the app restarts."""

    app: App

    async def acquire(self, *, retryable: bool, fresh: bool = False) -> AppSide:
        """A usable pooled connection unless `fresh`, else a new one; errors.UpstreamError
        naming the fault when none can be made."""
