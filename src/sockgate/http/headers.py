"""Header policy in both directions: what is hop-by-hop, what the app is told about the client."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from ..config import DEFAULT_PREFIX_HEADERS, App
from . import rewrite
from .events import Framing, Headers, RequestHead
from .serialise import field_lines, request_head
from .watch import Watch

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        # Only ever sent with `Upgrade: h2c`, which sockgate never forwards (http/fields.py,
        # offers_h2c), and hop-by-hop by definition (RFC 7540 3.2.1), named by Connection or not.
        b"http2-settings",
        b"content-length",  # framing is decided again for each hop
    }
)
# Set by sockgate from what it knows; a client's own values would be spoofing. The usual prefix
# headers are dropped for every app, also one that is told none: they are not the client's to say.
_OURS: Final = frozenset(
    {b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host"}
    | {name.lower().encode() for name in DEFAULT_PREFIX_HEADERS}
)


# What the parsers watch for (their heads' `watched`): a head without any of these names passes
# to_app (with the default prefix headers) and unchanged_for_client without a look at each header.
REQUEST_WATCH: Final[Watch] = dict.fromkeys(HOP_BY_HOP | _OURS | {b"x-forwarded-for"})


_SINGLE_TOKENS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        # The length test first: this runs over every header of every message.
        if len(name) == 10 and name.lower() == b"connection":
            single = value.lower()
            if single in _SINGLE_TOKENS:  # most say just one of these
                tokens.add(single)
            else:
                tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def _end_to_end(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """Headers without hop-by-hop ones, those that Connection names (never Host), and `drop`."""
    named = _named_by_connection(headers)
    skip = HOP_BY_HOP | named | drop if named or drop else HOP_BY_HOP
    return [(name, value) for name, value in headers if name.lower() not in skip]


def _end_to_end_rewritten(
    headers: Headers, mount: bytes, host: bytes | None, scheme: bytes
) -> Headers:
    """`_end_to_end`, with the values rewrite.py rewrites rewritten on the way."""
    named = _named_by_connection(headers)
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named:
            continue
        if lower in rewrite.REWRITTEN:
            value = rewrite.response_header(lower, value, mount, host, scheme)
        kept.append((name, value))
    return kept


def to_app(
    head: RequestHead, app: App, *, client_ip: str, default_host: bytes, scheme: bytes = b"http"
) -> Headers:
    """The request headers the app receives."""
    skip, watched_for = _dropped_towards(app.prefix_headers)
    forwarded_for: list[bytes]
    if not head.watched and watched_for:
        headers, forwarded_for, connection = list(head.headers), [], False  # nothing to drop
    else:
        headers, forwarded_for, connection = _kept_towards(head.headers, skip)
    if connection and (named := _named_by_connection(head.headers) - skip):
        # Rare: Connection names end-to-end headers too, which then stop at this hop.
        headers = [(name, value) for name, value in headers if name.lower() not in named]
        if b"x-forwarded-for" in named:
            forwarded_for = []
    ip = client_ip.encode()
    host = head.host if head.host is not None else default_host
    if head.host is None:
        headers.append((b"Host", host))
    forwarded_for.append(ip)
    headers += _added(
        ip, b", ".join(forwarded_for), host, scheme, _prefix_of(app), app.prefix_headers
    )
    if head.upgrade:
        upgrade = next(v for n, v in head.headers if n.lower() == b"upgrade")
        headers += [(b"Connection", b"upgrade"), (b"Upgrade", upgrade)]
    elif head.framing is Framing.CHUNKED:
        headers.append((b"Transfer-Encoding", b"chunked"))
    elif head.framing is Framing.LENGTH:
        headers.append((b"Content-Length", b"%d" % (head.content_length or 0)))
    return headers


def app_request(
    head: RequestHead,
    target: bytes,
    app: App,
    *,
    client_ip: str,
    default_host: bytes,
    scheme: bytes = b"http",
) -> bytes:
    """The request head the app receives: `to_app`'s headers after the request line. For the
    common head (nothing to drop, a Host, no body, no upgrade) the fields sockgate adds are
    serialised once per client address, host and app."""
    host = head.host
    if not head.watched and head.framing is Framing.NONE and not head.upgrade and host is not None:
        last = _LAST_ADDED
        if (
            last.app is app
            and last.host == host
            and last.client_ip == client_ip
            and last.scheme == scheme
        ):
            return request_head(head.method, target, head.headers, end=last.lines)
        if _dropped_towards(app.prefix_headers)[1]:
            added = _added_lines(client_ip, host, scheme, _prefix_of(app), app.prefix_headers)
            last.remember(client_ip, host, scheme, app, added)
            return request_head(head.method, target, head.headers, end=added)
    fields = to_app(head, app, client_ip=client_ip, default_host=default_host, scheme=scheme)
    return request_head(head.method, target, fields)


class _Added:
    """The last `_added_lines` of the common head, with what they were made of: most requests
    repeat the client address, host, scheme and app of the one before, and this is a few
    comparisons where lru_cache builds and hashes a key. Kept only for an app whose dropped
    headers the parsers watch for (so that a head without them needs no look at each header)."""

    __slots__ = ("app", "client_ip", "host", "lines", "scheme")

    def __init__(self) -> None:
        self.client_ip = ""
        self.host = b""
        self.scheme = b""
        self.app: App | None = None
        self.lines = b""

    def remember(self, client_ip: str, host: bytes, scheme: bytes, app: App, lines: bytes) -> None:
        self.client_ip = client_ip
        self.host = host
        self.scheme = scheme
        self.app = app
        self.lines = lines


_LAST_ADDED: Final = _Added()


def _prefix_of(app: App) -> str | None:
    return app.prefix if app.prefixed else None


def _added(
    ip: bytes,
    forwarded_for: bytes,
    host: bytes,
    scheme: bytes,
    prefix: str | None,
    prefix_headers: tuple[str, ...],
) -> Headers:
    """The fields sockgate sets: who the client is, how and where it asked, and for an app
    that sees paths without its `prefix`, that prefix in `prefix_headers`."""
    fields = [
        (b"X-Real-IP", ip),
        (b"X-Forwarded-For", forwarded_for),
        (b"X-Forwarded-Proto", scheme),
        (b"X-Forwarded-Host", host),
    ]
    if prefix is not None:
        mount = prefix[:-1].encode()  # App.mount: "/app1" for "/app1/"
        fields += [(name.encode(), mount) for name in prefix_headers]
    return fields


@functools.lru_cache(maxsize=256)
def _added_lines(
    client_ip: str, host: bytes, scheme: bytes, prefix: str | None, names: tuple[str, ...]
) -> bytes:
    """`_added` for a client that sent no X-Forwarded-For, serialised, with the head's end."""
    ip = client_ip.encode()
    fields = _added(ip, ip, host, scheme, prefix, names)
    return field_lines(fields) + b"\r\n"


def _kept_towards(head: Headers, skip: frozenset[bytes]) -> tuple[Headers, list[bytes], bool]:
    """The client's headers but those in `skip`; its X-Forwarded-For values; whether it sent
    a Connection header."""
    headers: Headers = []
    forwarded_for: list[bytes] = []
    connection = False
    for name, value in head:
        lower = name.lower()
        if lower in skip:
            connection = connection or lower == b"connection"
        elif lower == b"x-forwarded-for":
            forwarded_for.append(value)
        else:
            headers.append((name, value))
    return headers, forwarded_for, connection


@functools.cache
def _dropped_towards(prefix_headers: tuple[str, ...]) -> tuple[frozenset[bytes], bool]:
    """What never reaches an app told `prefix_headers` (hop-by-hop headers, those sockgate
    sets), and whether the parsers watch for all of it."""
    skip = HOP_BY_HOP | _OURS | _lower(prefix_headers)
    return skip, skip <= REQUEST_WATCH.keys()


def _named_by_connection(headers: Headers) -> set[bytes]:
    """Header names that Connection lists (never Host); most requests name only keep-alive."""
    tokens = connection_tokens(headers)
    tokens.discard(b"host")
    return tokens


@functools.cache
def _lower(names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(name.lower().encode() for name in names)


# What to_client would drop or change in a response whose framing is Content-Length towards a
# keep-alive HTTP/1.1 client: anything else lets the app's head pass unchanged.
_CHANGED: Final = HOP_BY_HOP - {b"content-length", b"connection"}
_CHANGED_REWRITING: Final = _CHANGED | rewrite.REWRITTEN


# The one Connection value a response may pass on: it is true of the client's hop too.
_PASSING_CONNECTION: Final = b"keep-alive"
# What the response parser watches for: every name unchanged_for_client looks at.
RESPONSE_WATCH: Final[Watch] = {
    **dict.fromkeys(_CHANGED_REWRITING),
    b"connection": _PASSING_CONNECTION,
}


# The hop-by-hop headers that RESPONSE_WATCH does not watch for (by length first).
_FRAMING_LENGTHS: Final = frozenset({len(b"connection"), len(b"content-length")})


def _framing(name: bytes) -> bool:
    lower = name.lower()
    return lower == b"connection" or lower == b"content-length"


def unchanged_for_client(headers: Headers, app: App, *, watched: bool = True) -> bool:
    """The app's response head can go to the client as it is: no header to drop or rewrite.

    Only for a Content-Length response to a kept-alive HTTP/1.1 client, where to_client would
    add back the same Content-Length and `Connection: keep-alive` is true of both hops.
    `watched`: the head's own flag, when parsed watching for RESPONSE_WATCH."""
    if not watched:
        return True
    changed = _CHANGED_REWRITING if app.rewrites else _CHANGED
    for name, value in headers:
        lower = name.lower()
        if lower in changed:
            return False
        if lower == b"connection" and value.lower() != _PASSING_CONNECTION:
            return False
    return True


def to_client(
    headers: Headers,
    *,
    upgrade: bool,
    app: App | None = None,
    host: bytes | None = None,
    watched: bool = True,
    scheme: bytes = b"http",
) -> Headers:
    """The app's response headers the client receives, before framing headers are added.

    For an app that `rewrites`, Location, Refresh and Set-Cookie are moved under its prefix in the
    same pass (see rewrite.py); `host` and `scheme` are the request's, the proxy's own origin.
    `watched`: the head's own flag, when parsed watching for RESPONSE_WATCH."""
    if not watched and not upgrade:
        # Of what the policy drops or rewrites, only these can be there (Connection with the
        # one value that names no other header).
        return [(n, v) for n, v in headers if len(n) not in _FRAMING_LENGTHS or not _framing(n)]
    if app is None or not app.rewrites:
        kept = _end_to_end(headers)
    else:
        kept = _end_to_end_rewritten(headers, app.mount.encode(), host, scheme)
    if upgrade:
        value = next((v for n, v in headers if n.lower() == b"upgrade"), None)
        kept += [(b"Connection", b"upgrade")]
        if value is not None:
            kept.append((b"Upgrade", value))
    return kept
