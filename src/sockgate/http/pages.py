"""Responses sockgate writes itself: redirects and error pages, as HTML or plain text."""

from __future__ import annotations

import html
from dataclasses import dataclass
from http import HTTPStatus

from .events import Headers
from .serialise import response_head


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    title: str
    detail: str = ""
    app: str | None = None
    socket: str | None = None
    location: bytes | None = None
    refresh: int | None = None  # seconds: the browser loads the page again (the app is down)


def wants_html(headers: Headers) -> bool:
    return any(n.lower() == b"accept" and b"text/html" in v.lower() for n, v in headers)


def is_navigation(method: bytes, headers: Headers) -> bool:
    """A browser loading a page (not a script's request): worth a page that retries."""
    return method == b"GET" and wants_html(headers)


def render(page: Page, *, as_html: bool, close: bool) -> tuple[bytes, bytes]:
    """The response head and body, ready to write (a HEAD request gets the head alone)."""
    headers, body = parts(page, as_html=as_html)
    if close:
        headers.append((b"Connection", b"close"))
    reason = HTTPStatus(page.status).phrase.encode()
    return response_head(page.status, reason, headers), body


def parts(page: Page, *, as_html: bool) -> tuple[Headers, bytes]:
    """The page's headers and body, for any protocol's framing."""
    reason = HTTPStatus(page.status).phrase
    lines = [f"{page.status} {reason}: {page.title}"]
    if page.app is not None:
        lines.append(f"app: {page.app}")
    if page.socket is not None:
        lines.append(f"socket: {page.socket}")
    if page.detail:
        lines.append(page.detail)
    if as_html:
        items = "".join(f"<p>{html.escape(line)}</p>\n" for line in lines[1:])
        body = (
            "<!doctype html>\n<html><head><meta charset=utf-8>"
            + (f"<meta http-equiv=refresh content={page.refresh}>" if page.refresh else "")
            + f"<title>{page.status} {html.escape(reason)}</title></head>\n<body>\n"
            f"<h1>{page.status} {html.escape(reason)}</h1>\n"
            f"<p><b>{html.escape(page.title)}</b></p>\n"
            f"{items}<hr><p>sockgate</p>\n</body></html>\n"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = ("\n".join(lines) + "\n").encode()
        ctype = b"text/plain; charset=utf-8"
    headers: Headers = [
        (b"Content-Type", ctype),
        (b"Content-Length", b"%d" % len(body)),
        (b"Cache-Control", b"no-store"),
    ]
    if page.location is not None:
        headers.append((b"Location", page.location))
    if page.refresh:
        headers.append((b"Retry-After", b"%d" % page.refresh))
    return headers, body
