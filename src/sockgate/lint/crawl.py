"""Fetching an app's pages through the proxy, breadth-first from its prefix.

Each request is one HTTP/1.1 exchange on its own connection, read with sockgate's own strict
response parser. Redirects are not followed blindly: every Location is checked, then fetched
if it stays inside the app, like every page link that does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import __version__
from ..engine.stream import Stream
from ..engine.upstream import AppConnection
from ..http.events import Data, EndOfMessage, Framing, ProtocolError, ResponseHead
from ..http.serialise import request_head
from . import MAX_PAGES
from .find import Scope, check, cookie_findings, header_refs, page_refs, to_follow
from .report import AppResult, Page

# A page is read up to this size; the rest is not parsed.
MAX_BODY = 4 * 1024 * 1024
TIMEOUT = 15.0  # seconds for one whole exchange
USER_AGENT = f"sockgate-lint/{__version__}".encode()


class FetchError(Exception):
    """No usable answer to a request: the message says why."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    @property
    def is_html(self) -> bool:
        kind = self.header("content-type").partition(";")[0].strip().lower()
        return kind in ("text/html", "application/xhtml+xml")

    def text(self) -> str:
        _, _, params = self.header("content-type").partition(";")
        charset = "utf-8"
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip("\"'") or charset
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


async def fetch(address: tuple[str, int], url: str, timeout: float = TIMEOUT) -> Response:  # noqa: ASYNC109
    """GET `url` over a TCP connection to `address` (the proxy), with the URL's host as Host."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        (b"Host", parts.netloc.encode()),
        (b"User-Agent", USER_AGENT),
        (b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
        (b"Connection", b"close"),
    ]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, stream = await loop.create_connection(Stream, *address)
            conn = AppConnection(stream)
            try:
                stream.write(request_head(b"GET", target.encode(), headers))
                return await _read(conn)
            finally:
                conn.close()
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g}s") from None
    except OSError as exc:
        raise FetchError(f"connection to {address[0]}:{address[1]} failed: {exc}") from None


async def _read(conn: AppConnection) -> Response:
    head: ResponseHead | None = None
    body = bytearray()
    while True:
        event = await conn.next_event()
        if event is None:
            if head is not None and head.framing is Framing.UNTIL_CLOSE:
                break
            raise FetchError("the connection closed before the answer was complete")
        if isinstance(event, ProtocolError):
            raise FetchError(f"the answer is not valid HTTP: {event.reason}")
        if isinstance(event, ResponseHead) and not event.informational:
            head = event
        elif isinstance(event, Data) and len(body) < MAX_BODY:
            body += event.data[: MAX_BODY - len(body)]
        elif isinstance(event, EndOfMessage) and head is not None:
            break
    assert head is not None
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers]
    return Response(head.status, headers, bytes(body))


async def crawl(
    scope: Scope, address: tuple[str, int], start: str, max_pages: int = MAX_PAGES
) -> AppResult:
    """Fetch the app's pages breadth-first from `start`, each URL once, up to `max_pages`."""
    queue, seen = deque([start]), {start}
    pages: list[Page] = []
    found = []
    while queue and len(pages) < max_pages:
        url = queue.popleft()
        try:
            response = await fetch(address, url)
        except FetchError as exc:
            if url == start:
                return AppResult(scope.app, start, error=f"GET {url}: {exc}")
            pages.append(Page(url, None, error=str(exc)))
            continue
        pages.append(Page(url, response.status, response.header("content-type")))
        refs = header_refs(url, response.status, response.headers)
        if response.is_html:
            refs += page_refs(url, response.text())
        found += check(url, refs, scope) + cookie_findings(url, response.headers, scope)
        for link in to_follow(refs, scope):
            if link not in seen:
                seen.add(link)
                queue.append(link)
    return AppResult(scope.app, start, tuple(pages), tuple(found), unvisited=len(queue))
