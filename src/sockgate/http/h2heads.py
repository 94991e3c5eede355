"""HTTP/2 heads as the exchange sees them: a request's header block (h2 has checked its
pseudo-headers and framing rules) into the same RequestHead an HTTP/1.1 request makes, and a
response head out as an HTTP/2 header block. Pure, like the HTTP/1.1 framing beside it."""

from __future__ import annotations

from typing import Final

from ..config import App
from ..errors import BadRequest
from .events import Framing, Headers, RequestHead, ResponseHead
from .respond import client_framing

# What the access log and `RequestHead.version` say for HTTP/2, as nginx writes it.
VERSION: Final = b"2.0"
# Fields with no meaning in HTTP/2 (RFC 9113 8.2.2); h2 refuses them in requests, and
# to_client has dropped them from responses already, except these it leaves to HTTP/1.1.
_CONNECTION_SPECIFIC: Final = frozenset({b"connection", b"keep-alive", b"proxy-connection"})


def request_head(fields: Headers, *, ended: bool, websocket_key: bytes) -> RequestHead:
    """The request a header block opens; `ended`: END_STREAM came with it (no body).
    A WebSocket over HTTP/2 (RFC 8441: CONNECT with :protocol websocket) becomes HTTP/1.1's
    upgrade (RFC 6455), with `websocket_key` as its Sec-WebSocket-Key, which HTTP/2 has none of.
    BadRequest for what an HTTP/1.1 app could not be sent."""
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    cookies: list[bytes] = []
    content_length = None
    referer = user_agent = None
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)  # split for compression, one line again for HTTP/1.1
        elif name not in (b"host", b"sec-websocket-key"):
            if name == b"content-length":
                content_length = _length(value)
            elif name == b"referer":
                referer = value
            elif name == b"user-agent":
                user_agent = value
            headers.append((name, value))
    method = pseudo.get(b":method", b"")
    upgrade = False
    if method == b"CONNECT":
        if pseudo.get(b":protocol") != b"websocket":
            raise BadRequest("CONNECT (a tunnel through sockgate) is not served")
        method, upgrade, ended = b"GET", True, True  # the stream's DATA is the tunnel's
        headers += [(b"upgrade", b"websocket"), (b"sec-websocket-key", websocket_key)]
    host = pseudo.get(b":authority") or _field(fields, b"host")
    if host is None:
        raise BadRequest("the request names no host (:authority)")
    headers.insert(0, (b"host", host))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if ended:
        framing = Framing.NONE
    elif content_length is not None:
        framing = Framing.LENGTH
    else:
        framing = Framing.CHUNKED  # a body of unknown length, chunked towards the app
    return RequestHead(
        method,
        pseudo.get(b":path", b"/"),
        VERSION,
        headers,
        keep_alive=True,
        upgrade=upgrade,
        framing=framing,
        content_length=content_length,
        host=host,
        expect_continue=False,
        referer=referer,
        user_agent=user_agent,
    )


def response_fields(head: RequestHead, response: ResponseHead, app: App | None) -> Headers:
    """The header block of a response: :status, then the app's headers as the header policy
    passes them to a client (rewritten for a prefix app), with Content-Length where known."""
    _, out = client_framing(head, response, app, b"https")
    fields: Headers = [(b":status", b"%d" % response.status)]
    fields += [
        (name.lower(), value) for name, value in out if name.lower() not in _CONNECTION_SPECIFIC
    ]
    return fields


def tunnel_fields(response: ResponseHead) -> Headers:
    """The 200 that opens an RFC 8441 WebSocket, for the app's 101: what the app agreed to
    (subprotocol, extensions), without what only HTTP/1.1's handshake carries."""
    fields: Headers = [(b":status", b"200")]
    for name, value in response.headers:
        lower = name.lower()
        if lower.startswith(b"sec-websocket-") and lower != b"sec-websocket-accept":
            fields.append((lower, value))
    return fields


def page_fields(status: int, headers: Headers) -> Headers:
    """The header block of a page of sockgate's own."""
    return [(b":status", b"%d" % status), *((name.lower(), value) for name, value in headers)]


def _length(value: bytes) -> int:
    if not value.isdigit():
        raise BadRequest(f"content-length {value!r} is not a number")
    return int(value)


def _field(fields: Headers, name: bytes) -> bytes | None:
    return next((value for key, value in fields if key == name), None)
