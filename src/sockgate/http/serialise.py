"""HTTP/1.1 heads and chunk framing back to bytes."""

from __future__ import annotations

from typing import Final

from .events import Headers

LAST_CHUNK: Final = b"0\r\n\r\n"


# A line at a time, each a literal bytes format of %s and %d: compiled, one step per line (a
# list of its four pieces cost four times as much, most of it in the join, which takes a buffer
# of each piece: over a thousand instructions per header line).


def request_head(method: bytes, target: bytes, headers: Headers, end: bytes = b"\r\n") -> bytes:
    """`end`: what follows `headers`, the blank line at least (more field lines before it)."""
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    for name, value in headers:
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(end)
    return b"".join(lines)


def field_lines(headers: Headers) -> bytes:
    lines = []
    for name, value in headers:
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines)


def response_head(status: int, reason: bytes, headers: Headers, version: bytes = b"1.1") -> bytes:
    lines = [b"HTTP/%s %d %s\r\n" % (version, status, reason)]
    for name, value in headers:
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk_header(size: int) -> bytes:
    return b"%x\r\n" % size
