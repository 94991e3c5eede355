"""Pages sockgate writes itself: HTML or text by Accept, escaped, correctly framed."""

from __future__ import annotations

import pytest

from sockgate import errors
from sockgate.http.events import Data, EndOfMessage, ResponseHead
from sockgate.http.pages import Page, is_navigation, render, wants_html
from sockgate.http.parse import ResponseParser

FAULT = Page(
    502,
    "socket file missing",
    detail="start the app <first> & retry",
    app="<script>alert(1)</script>",
    socket="/tmp/a&b/<s>.sock",
)


def whole(page: Page, *, as_html: bool, close: bool) -> bytes:
    """Head and body as one response, as the proxy writes them for a GET."""
    return b"".join(render(page, as_html=as_html, close=close))


def split(raw: bytes) -> tuple[ResponseHead, bytes]:
    """Parse a rendered page with the response parser: framing must be right for that to work."""
    parser = ResponseParser()
    parser.feed(raw)
    events = list(parser.events)
    head = events[0]
    assert isinstance(head, ResponseHead), events
    assert isinstance(events[-1], EndOfMessage), events
    body = b"".join(e.data for e in events if isinstance(e, Data))
    return head, body


def header(head: ResponseHead, name: bytes) -> list[bytes]:
    return [v for n, v in head.headers if n.lower() == name.lower()]


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        (b"text/html", True),
        (b"*/*", False),
        (b"application/json", False),
        (b"text/plain", False),
    ],
)
def test_wants_html_by_accept(accept: bytes, html: bool) -> None:
    assert wants_html([(b"Host", b"h"), (b"Accept", accept)]) is html


def test_no_accept_is_text() -> None:
    assert wants_html([(b"Host", b"h")]) is False


def test_accept_header_name_is_case_insensitive() -> None:
    assert wants_html([(b"accept", b"text/html")]) is True


@pytest.mark.parametrize("as_html", [True, False])
@pytest.mark.parametrize("close", [True, False])
def test_content_length_matches_body(as_html: bool, close: bool) -> None:
    raw = whole(FAULT, as_html=as_html, close=close)
    head, body = split(raw)
    assert head.status == 502
    assert head.reason == b"Bad Gateway"
    assert header(head, b"Content-Length") == [str(len(body)).encode()]
    assert raw.endswith(body)
    assert body


def test_html_page_is_html_and_escaped() -> None:
    head, body = split(whole(FAULT, as_html=True, close=False))
    assert header(head, b"Content-Type") == [b"text/html; charset=utf-8"]
    text = body.decode()
    assert text.startswith("<!doctype html>")
    assert "502 Bad Gateway" in text
    assert "socket file missing" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text
    assert "/tmp/a&amp;b/&lt;s&gt;.sock" in text
    assert "&lt;first&gt; &amp; retry" in text


def test_html_title_is_escaped() -> None:
    _, body = split(whole(Page(400, "bad <path> & co"), as_html=True, close=False))
    assert b"bad &lt;path&gt; &amp; co" in body
    assert b"<path>" not in body


def test_text_page_names_app_socket_and_fault() -> None:
    head, body = split(whole(FAULT, as_html=False, close=False))
    assert header(head, b"Content-Type") == [b"text/plain; charset=utf-8"]
    assert body.decode().splitlines() == [
        "502 Bad Gateway: socket file missing",
        "app: <script>alert(1)</script>",
        "socket: /tmp/a&b/<s>.sock",
        "start the app <first> & retry",
    ]


def test_non_ascii_names_are_counted_in_bytes() -> None:
    page = Page(502, "fault", app="café", socket="/tmp/ü.sock")
    for as_html in (True, False):
        head, body = split(whole(page, as_html=as_html, close=False))
        assert header(head, b"Content-Length") == [str(len(body)).encode()]
        assert "café".encode() in body


def test_redirect_has_location() -> None:
    page = Page(301, "this app lives under its prefix", location=b"/app1/?q=1")
    head, _ = split(whole(page, as_html=False, close=False))
    assert head.status == 301
    assert header(head, b"Location") == [b"/app1/?q=1"]


def test_no_location_unless_asked() -> None:
    head, _ = split(whole(Page(404, "nothing here"), as_html=False, close=False))
    assert header(head, b"Location") == []


@pytest.mark.parametrize(("close", "expected"), [(True, [b"close"]), (False, [])])
def test_connection_close(close: bool, expected: list[bytes]) -> None:
    head, _ = split(whole(Page(400, "bad"), as_html=False, close=close))
    assert header(head, b"Connection") == expected
    assert head.keep_alive is not close


def test_not_cached() -> None:
    head, _ = split(whole(Page(404, "no"), as_html=True, close=False))
    assert header(head, b"Cache-Control") == [b"no-store"]


@pytest.mark.parametrize("as_html", [True, False])
def test_head_only_has_no_body_but_the_same_length(as_html: bool) -> None:
    head_only, body = render(FAULT, as_html=as_html, close=False)
    full = head_only + body
    assert head_only.endswith(b"\r\n\r\n")
    assert full.startswith(head_only)
    assert len(full) > len(head_only)
    parser = ResponseParser()
    parser.head_request = True
    parser.feed(head_only)
    head = parser.events[0]
    assert isinstance(head, ResponseHead)
    assert head.content_length == len(full) - len(head_only)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, b"Bad Request"),
        (404, b"Not Found"),
        (413, b"Request Entity Too Large"),
        (414, b"Request-URI Too Long"),
        (431, b"Request Header Fields Too Large"),
        (502, b"Bad Gateway"),
        (504, b"Gateway Timeout"),
        (505, b"HTTP Version Not Supported"),
    ],
)
def test_status_line_reason(status: int, reason: bytes) -> None:
    raw = whole(Page(status, "x"), as_html=False, close=True)
    assert raw.startswith(b"HTTP/1.1 %d %s\r\n" % (status, reason))


def test_a_page_that_retries_says_so_to_browsers_and_scripts() -> None:
    page = Page(503, "socket file missing", "is the app running?", refresh=2)
    head, body = split(whole(page, as_html=True, close=True))
    assert head.status == 503
    assert header(head, b"Retry-After") == [b"2"]
    assert b"<meta http-equiv=refresh content=2>" in body
    plain_head, plain = split(whole(page, as_html=False, close=True))
    assert header(plain_head, b"Retry-After") == [b"2"]
    assert b"meta" not in plain


def test_pages_do_not_retry_by_default() -> None:
    head, body = split(whole(FAULT, as_html=True, close=False))
    assert header(head, b"Retry-After") == []
    assert b"refresh" not in body


@pytest.mark.parametrize(
    ("method", "accept", "navigation"),
    [
        (b"GET", b"text/html,*/*;q=0.8", True),
        (b"GET", b"application/json", False),
        (b"POST", b"text/html", False),
        (b"HEAD", b"text/html", False),
    ],
)
def test_navigation_is_a_get_that_accepts_html(
    method: bytes, accept: bytes, navigation: bool
) -> None:
    assert is_navigation(method, [(b"Accept", accept)]) is navigation


@pytest.mark.parametrize(
    ("error", "navigation", "status"),
    [
        (errors.SocketMissing("a", "/s"), True, 503),
        (errors.NothingListening("a", "/s"), True, 503),
        (errors.SocketMissing("a", "/s"), False, 502),
        (errors.NotASocket("a", "/s"), True, 502),
        (errors.AppReadTimeout("a", "/s"), True, 504),
        (errors.BadRequest("x"), True, 400),
    ],
)
def test_an_app_that_is_down_gets_503_for_a_navigation(
    error: errors.SockgateError, navigation: bool, status: int
) -> None:
    assert errors.status_for(error, navigation=navigation) == status
