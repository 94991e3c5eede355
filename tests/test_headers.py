"""Header policy: what the app is told about the client, and hop-by-hop removal both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sockgate.config import App
from sockgate.http.events import Framing, Headers, RequestHead, ResponseHead
from sockgate.http.headers import (
    HOP_BY_HOP,
    REQUEST_WATCH,
    RESPONSE_WATCH,
    app_request,
    connection_tokens,
    to_app,
    to_client,
    unchanged_for_client,
)
from sockgate.http.parse import RequestParser, ResponseParser
from sockgate.http.serialise import request_head

APP1 = App("app1", Path("/s/app1.sock"), "/app1/")
KEEP = App("keep", Path("/s/keep.sock"), "/keep/", strip_prefix=False)
ROOT = App("root", Path("/s/root.sock"), "/")
DEFAULT_HOST = b"127.0.0.1:8080"


def parse(raw: bytes) -> RequestHead:
    parser = RequestParser()
    parser.feed(raw)
    head = parser.events[0]
    assert isinstance(head, RequestHead), list(parser.events)
    return head


def request(*headers: bytes, line: bytes = b"GET /app1/x HTTP/1.1", body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def app_headers(
    raw: bytes, app: App = APP1, client_ip: str = "127.0.0.1", scheme: bytes = b"http"
) -> Headers:
    return to_app(parse(raw), app, client_ip=client_ip, default_host=DEFAULT_HOST, scheme=scheme)


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name.lower()]


def names(headers: Headers) -> set[bytes]:
    return {n.lower() for n, _ in headers}


# --- to_app -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [b"localhost:8080", b"127.0.0.1:8080", b"[::1]:9000", b"Ex.COM"])
def test_host_is_kept_exactly_with_its_port(host: bytes) -> None:
    headers = app_headers(request(b"Host: " + host))
    assert values(headers, b"Host") == [host]
    assert values(headers, b"X-Forwarded-Host") == [host]


def test_missing_host_gets_the_default() -> None:
    headers = app_headers(request(line=b"GET /app1/ HTTP/1.0"))
    assert values(headers, b"Host") == [DEFAULT_HOST]
    assert values(headers, b"X-Forwarded-Host") == [DEFAULT_HOST]


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "192.0.2.7"])
def test_x_real_ip_and_forwarded_for(ip: str) -> None:
    headers = app_headers(request(b"Host: h"), client_ip=ip)
    assert values(headers, b"X-Real-IP") == [ip.encode()]
    assert values(headers, b"X-Forwarded-For") == [ip.encode()]


def test_x_forwarded_for_is_appended_to_the_clients_values() -> None:
    headers = app_headers(
        request(
            b"Host: h",
            b"X-Forwarded-For: 203.0.113.1",
            b"Accept: */*",
            b"x-forwarded-for: 198.51.100.2, 198.51.100.3",
        ),
        client_ip="127.0.0.1",
    )
    assert values(headers, b"X-Forwarded-For") == [
        b"203.0.113.1, 198.51.100.2, 198.51.100.3, 127.0.0.1"
    ]


@pytest.mark.parametrize("scheme", [b"http", b"https"])
def test_x_forwarded_proto(scheme: bytes) -> None:
    assert values(app_headers(request(b"Host: h"), scheme=scheme), b"X-Forwarded-Proto") == [scheme]


def test_client_sent_forwarding_headers_are_replaced_not_duplicated() -> None:
    headers = app_headers(
        request(
            b"Host: real:8080",
            b"X-Real-IP: 6.6.6.6",
            b"X-Forwarded-Proto: https",
            b"X-Forwarded-Host: evil.example",
            b"X-Forwarded-Prefix: /evil",
            b"x-real-ip: 7.7.7.7",
        ),
        client_ip="127.0.0.1",
    )
    assert values(headers, b"X-Real-IP") == [b"127.0.0.1"]
    assert values(headers, b"X-Forwarded-Proto") == [b"http"]
    assert values(headers, b"X-Forwarded-Host") == [b"real:8080"]
    assert values(headers, b"X-Forwarded-Prefix") == [b"/app1"]


@pytest.mark.parametrize(
    ("app", "prefix"),
    [
        (APP1, [b"/app1"]),
        (App("n", Path("/n.sock"), "/a/b/"), [b"/a/b"]),
        (KEEP, []),  # not stripped: nothing to tell
        (ROOT, []),  # "/" strips nothing
    ],
)
def test_x_forwarded_prefix_only_when_something_was_stripped(app: App, prefix: list[bytes]) -> None:
    headers = app_headers(request(b"Host: h", b"X-Forwarded-Prefix: /spoof"), app=app)
    assert values(headers, b"X-Forwarded-Prefix") == prefix


def test_end_to_end_headers_pass_in_order_with_their_case() -> None:
    headers = app_headers(
        request(b"Host: h", b"Accept: text/html", b"cookie: a=1", b"X-Custom: 1", b"X-Custom: 2")
    )
    assert headers[:5] == [
        (b"Host", b"h"),
        (b"Accept", b"text/html"),
        (b"cookie", b"a=1"),
        (b"X-Custom", b"1"),
        (b"X-Custom", b"2"),
    ]


def test_hop_by_hop_headers_are_removed() -> None:
    headers = app_headers(
        request(
            b"Host: h",
            b"Connection: keep-alive, X-Secret, x-other",
            b"X-Secret: s",
            b"X-Other: o",
            b"Keep-Alive: timeout=5",
            b"Proxy-Connection: keep-alive",
            b"TE: trailers",
            b"Trailer: X-Sum",
            b"Upgrade: h2c",
            b"Accept: */*",
        )
    )
    present = names(headers)
    for name in (
        b"connection",
        b"x-secret",
        b"x-other",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
    ):
        assert name not in present, name
    assert values(headers, b"Accept") == [b"*/*"]
    assert values(headers, b"Host") == [b"h"]


def test_several_connection_headers_all_count() -> None:
    headers = app_headers(
        request(b"Host: h", b"Connection: X-A", b"Connection: X-B", b"X-A: 1", b"X-B: 2")
    )
    assert not names(headers) & {b"x-a", b"x-b", b"connection"}


@pytest.mark.parametrize(
    "connection", [b"Connection: host", b"Connection: Host, close", b"Connection: HOST"]
)
def test_connection_cannot_remove_host(connection: bytes) -> None:
    headers = app_headers(request(b"Host: h:1", connection))
    assert values(headers, b"Host") == [b"h:1"]


def test_chunked_framing_is_set_again() -> None:
    headers = app_headers(
        request(
            b"Host: h",
            b"Transfer-Encoding: chunked",
            line=b"POST /app1/ HTTP/1.1",
            body=b"0\r\n\r\n",
        )
    )
    assert values(headers, b"Transfer-Encoding") == [b"chunked"]
    assert values(headers, b"Content-Length") == []


def test_content_length_is_set_again_from_framing() -> None:
    headers = app_headers(
        request(b"Host: h", b"content-length: 5", line=b"POST /app1/ HTTP/1.1", body=b"hello")
    )
    assert values(headers, b"Content-Length") == [b"5"]
    assert values(headers, b"Transfer-Encoding") == []


def test_content_length_zero_is_kept() -> None:
    headers = app_headers(request(b"Host: h", b"Content-Length: 0", line=b"POST /app1/ HTTP/1.1"))
    assert values(headers, b"Content-Length") == [b"0"]


def test_no_body_no_framing_headers() -> None:
    headers = app_headers(request(b"Host: h"))
    assert not names(headers) & {b"content-length", b"transfer-encoding"}


def test_upgrade_request_gets_connection_upgrade_and_its_upgrade() -> None:
    headers = app_headers(
        request(
            b"Host: h",
            b"Connection: keep-alive, Upgrade",
            b"Upgrade: websocket",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
        )
    )
    assert values(headers, b"Connection") == [b"upgrade"]
    assert values(headers, b"Upgrade") == [b"websocket"]
    assert values(headers, b"Sec-WebSocket-Key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert values(headers, b"Sec-WebSocket-Version") == [b"13"]
    assert not names(headers) & {b"content-length", b"transfer-encoding"}


def test_upgrade_header_without_connection_upgrade_is_dropped() -> None:
    head = parse(request(b"Host: h", b"Upgrade: websocket"))
    assert head.upgrade is False
    headers = to_app(head, APP1, client_ip="::1", default_host=DEFAULT_HOST)
    assert values(headers, b"Upgrade") == []
    assert values(headers, b"Connection") == []


@pytest.mark.parametrize(
    "connection", [b"Connection: Upgrade, HTTP2-Settings", b"Connection: Upgrade"]
)
def test_an_h2c_upgrade_reaches_the_app_as_a_plain_request(connection: bytes) -> None:
    """h2c is never an upgrade (http/fields.py, offers_h2c): Upgrade, HTTP2-Settings and
    Connection stop here, whether Connection names HTTP2-Settings or not."""
    parser = RequestParser(watch=REQUEST_WATCH)  # as the proxy parses
    parser.feed(
        request(
            b"Host: h",
            connection,
            b"Upgrade: h2c",
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            b"Accept: */*",
        )
    )
    head = parser.events[0]
    assert isinstance(head, RequestHead)
    assert head.upgrade is False
    assert head.watched is True
    headers = to_app(head, APP1, client_ip="127.0.0.1", default_host=DEFAULT_HOST)
    assert not names(headers) & {b"upgrade", b"http2-settings", b"connection"}
    assert values(headers, b"Accept") == [b"*/*"]
    written = app_request(head, b"/x", APP1, client_ip="127.0.0.1", default_host=DEFAULT_HOST)
    assert b"h2c" not in written.lower()
    assert b"http2-settings" not in written.lower()


def test_to_app_works_on_a_head_built_directly() -> None:
    head = RequestHead(
        method=b"PUT",
        target=b"/app1/x",
        version=b"1.1",
        headers=[(b"Host", b"h"), (b"Content-Length", b"3"), (b"Connection", b"close")],
        keep_alive=False,
        upgrade=False,
        framing=Framing.LENGTH,
        content_length=3,
        host=b"h",
        expect_continue=False,
    )
    headers = to_app(head, APP1, client_ip="10.0.0.1", default_host=DEFAULT_HOST)
    assert headers == [
        (b"Host", b"h"),
        (b"X-Real-IP", b"10.0.0.1"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"h"),
        (b"X-Forwarded-Prefix", b"/app1"),
        (b"X-Script-Name", b"/app1"),
        (b"Content-Length", b"3"),
    ]


def test_to_app_does_not_mutate_the_head() -> None:
    head = parse(request(b"Host: h", b"Connection: x-a", b"X-A: 1"))
    before = list(head.headers)
    to_app(head, APP1, client_ip="::1", default_host=DEFAULT_HOST)
    assert head.headers == before


# --- to_client --------------------------------------------------------------------------------


def test_to_client_removes_hop_by_hop_and_what_connection_names() -> None:
    kept = to_client(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"x"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Sum"),
            (b"Upgrade", b"h2c"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"5"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ],
        upgrade=False,
    )
    assert kept == [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]


def test_to_client_upgrade_keeps_upgrade_and_sets_connection_upgrade() -> None:
    kept = to_client(
        [
            (b"Connection", b"Upgrade, X-Drop"),
            (b"Upgrade", b"websocket"),
            (b"X-Drop", b"1"),
            (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ],
        upgrade=True,
    )
    assert kept == [
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"Connection", b"upgrade"),
        (b"Upgrade", b"websocket"),
    ]


def test_to_client_keeps_headers_connection_does_not_name() -> None:
    kept = to_client([(b"Connection", b"x-a"), (b"X-A", b"1"), (b"X-B", b"2")], upgrade=False)
    assert kept == [(b"X-B", b"2")]


# --- helpers ----------------------------------------------------------------------------------


def test_connection_tokens() -> None:
    headers = [(b"Connection", b" Keep-Alive ,X-A,, "), (b"connection", b"x-b"), (b"X-C", b"y")]
    assert connection_tokens(headers) == {b"keep-alive", b"x-a", b"x-b"}


def test_hop_by_hop_set() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    } <= HOP_BY_HOP
    assert b"host" not in HOP_BY_HOP


# --- apps under a prefix: prefix headers and rewriting -----------------------------------------

SCRIPT_ONLY = App("app1", Path("/s/app1.sock"), "/app1/", prefix_headers=("X-Script-Name",))
SILENT = App("app1", Path("/s/app1.sock"), "/app1/", prefix_headers=())
CUSTOM = App("app1", Path("/s/app1.sock"), "/app1/", prefix_headers=("X-Mount",))
NO_REWRITE = App("app1", Path("/s/app1.sock"), "/app1/", rewrite=False)


def test_prefix_headers_by_default() -> None:
    headers = app_headers(request(b"Host: h"))
    assert values(headers, b"X-Forwarded-Prefix") == [b"/app1"]
    assert values(headers, b"X-Script-Name") == [b"/app1"]


@pytest.mark.parametrize(
    ("app", "told"),
    [
        (SCRIPT_ONLY, {b"x-script-name"}),
        (SILENT, set()),
        (CUSTOM, {b"x-mount"}),
        (KEEP, set()),
        (ROOT, set()),
    ],
    ids=["script-only", "none", "custom", "prefix-kept", "root"],
)
def test_prefix_headers_are_the_configured_ones(app: App, told: set[bytes]) -> None:
    spoofed = [b"X-Forwarded-Prefix: /evil", b"X-Script-Name: /evil", b"x-mount: /evil"]
    headers = app_headers(request(b"Host: h", *spoofed), app=app)
    for name in (b"x-forwarded-prefix", b"x-script-name"):
        expected = [app.mount.encode()] if name in told else []
        assert values(headers, name) == expected, name
    # A header of another name is the client's own, unless the app is configured with it.
    mount = values(headers, b"x-mount")
    assert mount == ([b"/app1"] if app is CUSTOM else [b"/evil"])


def test_a_configured_prefix_header_is_dropped_from_the_client_even_when_not_sent() -> None:
    kept_custom = App("k", Path("/s/k.sock"), "/k/", strip_prefix=False, prefix_headers=("X-M",))
    headers = app_headers(request(b"Host: h", b"X-M: /evil"), app=kept_custom)
    assert values(headers, b"X-M") == []


RESPONSE: Headers = [
    (b"Location", b"/login?next=/x"),
    (b"Refresh", b"5; url=/later"),
    (b"Set-Cookie", b"a=1; Path=/; HttpOnly"),
    (b"set-cookie", b"b=2; path=/x"),
    (b"Set-Cookie", b"c=3"),
    (b"Link", b"</style.css>; rel=preload"),
    (b"Content-Location", b"/doc"),
]


def test_to_client_rewrites_under_the_prefix() -> None:
    kept = to_client(RESPONSE, upgrade=False, app=APP1, host=b"localhost:8080")
    assert kept == [
        (b"Location", b"/app1/login?next=/x"),
        (b"Refresh", b"5; url=/app1/later"),
        (b"Set-Cookie", b"a=1; Path=/app1/; HttpOnly"),
        (b"set-cookie", b"b=2; path=/app1/x"),
        (b"Set-Cookie", b"c=3"),
        (b"Link", b"</style.css>; rel=preload"),
        (b"Content-Location", b"/doc"),
    ]


def test_to_client_rewrites_absolute_urls_to_the_request_host() -> None:
    response: Headers = [(b"Location", b"http://localhost:8080/x")]
    kept = to_client(response, upgrade=False, app=APP1, host=b"localhost:8080")
    assert kept == [(b"Location", b"http://localhost:8080/app1/x")]
    kept = to_client(response, upgrade=False, app=APP1, host=b"other:8080")
    assert kept == response


@pytest.mark.parametrize(
    "app", [None, NO_REWRITE, KEEP, ROOT], ids=["no-app", "off", "kept", "root"]
)
def test_to_client_leaves_values_alone_without_rewriting(app: App | None) -> None:
    assert to_client(RESPONSE, upgrade=False, app=app, host=b"localhost:8080") == RESPONSE


def test_rewriting_still_removes_hop_by_hop() -> None:
    response: Headers = [
        (b"Connection", b"X-Secret"),
        (b"X-Secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Location", b"/x"),
    ]
    kept = to_client(response, upgrade=False, app=APP1, host=b"h")
    assert kept == [(b"Location", b"/app1/x")]


def test_rewriting_touches_only_its_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a response without Location, Refresh or Set-Cookie calls no rewriting."""
    from sockgate.http import rewrite

    def fail(*args: object) -> bytes:
        raise AssertionError("rewrite called")

    monkeypatch.setattr(rewrite, "response_header", fail)
    response: Headers = [(b"Content-Type", b"text/html"), (b"X-Location", b"/x")]
    assert to_client(response, upgrade=False, app=APP1, host=b"h") == response


def test_an_upgrade_response_is_rewritten_too() -> None:
    response: Headers = [(b"Upgrade", b"websocket"), (b"Set-Cookie", b"a=1; Path=/")]
    kept = to_client(response, upgrade=True, app=APP1, host=b"h")
    assert (b"Set-Cookie", b"a=1; Path=/app1/") in kept


# --- the parsers' watch flags: the same policy without a look at each header --------------------

_POOL = [
    b"Accept",
    b"Connection",
    b"connection",
    b"KEEP-ALIVE",
    b"Upgrade",
    b"TE",
    b"X-Forwarded-For",
    b"x-forwarded-for",
    b"X-Real-IP",
    b"X-Forwarded-Prefix",
    b"X-Script-Name",
    b"X-Custom",
    b"x-custom",
    b"Location",
    b"Set-Cookie",
    b"Refresh",
    b"Trailer",
    b"Proxy-Connection",
]
_VALUES = [
    b"keep-alive",
    b"close",
    b"X-Custom",
    b"x-forwarded-for, x-custom",
    b"/a",
    b"v=1; Path=/",
]
# Responses also vary what the fast paths let through: Connection's one passing value in other
# cases and padding, Keep-Alive, repeated Content-Length (llhttp refuses some: not a head then).
_RESPONSE_POOL = [*_POOL, b"Content-Length", b"CONTENT-LENGTH", b"Transfer-Encoding"]
_RESPONSE_VALUES = [*_VALUES, b"KEEP-ALIVE", b"Keep-Alive", b" keep-alive", b"0", b"chunked"]
TOLD_CUSTOM = App("custom", Path("/s/c.sock"), "/custom/", prefix_headers=("X-Custom",))


@settings(max_examples=300, derandomize=True, database=None)
@given(
    fields=st.lists(st.tuples(st.sampled_from(_POOL), st.sampled_from(_VALUES)), max_size=6),
    app=st.sampled_from([APP1, KEEP, ROOT, TOLD_CUSTOM]),
)
def test_to_app_is_the_same_for_a_head_parsed_watching(
    fields: list[tuple[bytes, bytes]], app: App
) -> None:
    raw = request(b"Host: h", *(n + b": " + v for n, v in fields))
    watching = RequestParser(watch=REQUEST_WATCH)
    watching.feed(raw)
    head = watching.events[0]
    assert isinstance(head, RequestHead)
    assert head.watched == any(n.lower() in REQUEST_WATCH for n, _ in fields)
    kwargs = {"client_ip": "10.0.0.1", "default_host": DEFAULT_HOST}
    assert to_app(head, app, **kwargs) == to_app(parse(raw), app, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=500, derandomize=True, database=None)
@given(
    fields=st.lists(
        st.tuples(st.sampled_from(_RESPONSE_POOL), st.sampled_from(_RESPONSE_VALUES)), max_size=6
    ),
    app=st.sampled_from([APP1, KEEP]),
)
def test_the_response_policy_is_the_same_for_a_head_parsed_watching(
    fields: list[tuple[bytes, bytes]], app: App
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
        + b"Content-Length: 0\r\n\r\n"
    )
    parser = ResponseParser(watch=RESPONSE_WATCH)
    parser.feed(raw)
    head = parser.events[0]
    assume(isinstance(head, ResponseHead))
    assert isinstance(head, ResponseHead)
    expected = unchanged_for_client(head.headers, app)
    assert unchanged_for_client(head.headers, app, watched=head.watched) == expected
    kwargs = {"upgrade": False, "app": app, "host": b"h"}
    kept = to_client(head.headers, **kwargs)  # type: ignore[arg-type]
    assert to_client(head.headers, watched=head.watched, **kwargs) == kept  # type: ignore[arg-type]


def test_a_parser_told_nothing_to_watch_reports_every_head_watched() -> None:
    assert parse(request(b"Host: h")).watched is True


@settings(max_examples=400, derandomize=True, database=None)
@given(
    fields=st.lists(st.tuples(st.sampled_from(_POOL), st.sampled_from(_VALUES)), max_size=6),
    app=st.sampled_from([APP1, KEEP, ROOT, TOLD_CUSTOM]),
    host=st.sampled_from([b"Host: h:8080", b"Host: [::1]:9", None]),
    body=st.sampled_from([b"", b"Content-Length: 3", b"Transfer-Encoding: chunked"]),
    client_ip=st.sampled_from(["127.0.0.1", "::1", "10.1.2.3"]),
    version=st.sampled_from([b"1.1", b"1.0"]),
    scheme=st.sampled_from([b"http", b"https"]),
)
def test_app_request_is_the_head_to_app_gives(
    fields: list[tuple[bytes, bytes]],
    app: App,
    host: bytes | None,
    body: bytes,
    client_ip: str,
    version: bytes,
    scheme: bytes,
) -> None:
    """The bytes the app receives are request_head(to_app(...)) whichever way they are built
    (the fields sockgate adds cached as bytes for the common head, and the last of those kept
    with what they were made of: the examples change app, host, address and scheme)."""
    if host is None and version == b"1.1":
        version = b"1.0"  # an HTTP/1.1 request without Host is refused before this
    lines = [
        *(n + b": " + v for n, v in fields),
        *([host] if host else []),
        *([body] if body else []),
    ]
    raw = request(*lines, line=b"POST /app1/x?q HTTP/" + version)
    watching = RequestParser(watch=REQUEST_WATCH)
    watching.feed(raw)
    head = watching.events[0]
    assume(isinstance(head, RequestHead))  # not an HTTP/1.0 request with Transfer-Encoding
    assert isinstance(head, RequestHead)
    for _ in range(2):  # the second time from the cache
        built = app_request(
            head, b"/x?q", app, client_ip=client_ip, default_host=DEFAULT_HOST, scheme=scheme
        )
        expected = to_app(head, app, client_ip=client_ip, default_host=DEFAULT_HOST, scheme=scheme)
        assert built == request_head(b"POST", b"/x?q", expected)


def test_app_request_after_one_that_differs_in_a_single_input_is_its_own() -> None:
    """The last added fields are kept with the client address, host, scheme and app they were
    made for: a request that differs from the one before in any one of them alone gets its
    own (each pair below differs in one; the property test above rarely makes such pairs)."""
    base = (APP1, b"h:8080", "127.0.0.1", b"http")
    others = (KEEP, b"other:9", "::1", b"https")
    for i, other in enumerate(others):
        changed = (*base[:i], other, *base[i + 1 :])
        for app, host, client_ip, scheme in (base, changed, base):
            assert isinstance(app, App)
            assert isinstance(host, bytes)
            assert isinstance(client_ip, str)
            assert isinstance(scheme, bytes)
            watching = RequestParser(watch=REQUEST_WATCH)
            watching.feed(request(b"Host: " + host))
            head = watching.events[0]
            assert isinstance(head, RequestHead)
            assert not head.watched  # the common head, whose added fields are kept
            kwargs = {"client_ip": client_ip, "default_host": DEFAULT_HOST, "scheme": scheme}
            built = app_request(head, b"/x", app, **kwargs)  # type: ignore[arg-type]
            fields = to_app(head, app, **kwargs)  # type: ignore[arg-type]
            assert built == request_head(b"GET", b"/x", fields), (i, app.name, host, client_ip)
