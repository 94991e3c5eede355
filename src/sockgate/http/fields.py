"""Values read off a head the way the parsers need them, compiled: Content-Length digits, the
version at the end of a request line, an Upgrade header's offer of h2c."""

from __future__ import annotations

from typing import Final

from .events import Headers

_H2C: Final = b"h2c"


def content_length(value: bytes) -> int:
    """A Content-Length value as llhttp has let it through, in digits: read here, compiled, a
    tenth of what int() costs on bytes (a call of the int type, which also takes signs, spaces
    and underscores). Anything but plain digits is left to int(), whose ValueError the parser
    reports."""
    if not value:
        return int(value)
    length = 0
    for byte in value:
        if byte < 48 or byte > 57:
            return int(value)
        length = length * 10 + (byte - 48)
    return length


def request_version(source: bytes | None, method: bytes, target: bytes) -> bytes | None:
    """b"1.1" or b"1.0" where the request line at the start of `source`, which llhttp has read
    as `method` and `target`, ends in that version after single spaces; None where it is not
    plainly so (an empty line first, the line not all there): then llhttp is asked. A slice and
    a comparison, not str.find and startswith: mypyc compiles these two to C."""
    if source is None:
        return None
    start = len(method) + len(target) + 2
    version = source[start : start + 10]
    if version == b"HTTP/1.1\r\n":
        return b"1.1"
    if version == b"HTTP/1.0\r\n":
        return b"1.0"
    return None


def offers_h2c(headers: Headers) -> bool:
    """Whether an Upgrade header offers h2c (HTTP/2 over cleartext), alone or among others.

    Such a request is never an upgrade, in either engine: past a 101 the client would speak
    HTTP/2 straight to the app, whose requests no longer pass sockgate's routing and Host check
    (h2c smuggling). It is read and forwarded as plain HTTP/1.1, Upgrade and HTTP2-Settings
    dropped (both hop-by-hop, http/headers.py). An offer that lists h2c among other protocols
    (`websocket, h2c`) is no upgrade either, rather than one with h2c taken out: the offers are
    alternatives the app picks from, no client mixes h2c with another (a WebSocket client sends
    `websocket` alone, RFC 6455 4.1), and nginx's map of $http_upgrade could only take a
    token out of a list with a fragile regex; so both engines answer it alike.
    Called only for heads llhttp flags as upgrades: other requests pay nothing."""
    for name, value in headers:
        if len(name) == 7 and name.lower() == b"upgrade":
            for offer in value.split(b","):
                # protocol-name ["/" protocol-version] (RFC 9110 7.8), names compared caselessly
                if offer.strip().lower().partition(b"/")[0] == _H2C:
                    return True
    return False
