"""What to tell a user whose app answered something that is not HTTP: the first bytes it sent,
escaped so that they print on one line, and what such bytes usually mean."""

from __future__ import annotations

from typing import Final

# How much of the answer is shown: enough to recognise a banner or a greeting.
SHOWN: Final = 40
_ESCAPES: Final = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"'}
# First bytes that name what answered, when they do.
_KNOWN: Final = (
    (b"\x15\x03", "a TLS alert: the app serves HTTPS (TLS) on this socket"),
    (b"\x16\x03", "a TLS handshake: the app serves HTTPS (TLS) on this socket"),
    (b"SSH-", "an SSH server's greeting"),
    (b"PRI * HTTP/2.0", "HTTP/2 with prior knowledge, where HTTP/1.1 is expected"),
    (b"\x00\x00", "HTTP/2 frames (or another binary protocol), where HTTP/1.1 is expected"),
)
USUAL: Final = "usual causes: a TLS (HTTPS) server, another protocol, or the wrong socket"


def escape(data: bytes) -> str:
    """`data` as printable ASCII: quotes, backslashes and control bytes escaped."""
    out = []
    for byte in data:
        if byte in _ESCAPES:
            out.append(_ESCAPES[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def describe(first: bytes) -> str:
    """The detail of a fault whose answer began with `first`, where an HTTP/1.x status line was
    expected."""
    shown = '"' + escape(first[:SHOWN]) + '"' + ("..." if len(first) > SHOWN else "")
    for start, meaning in _KNOWN:
        if first.startswith(start):
            return f"it answered {shown}, {meaning}"
    return f"it answered {shown}; {USUAL}"


def detail(reason: str, first: bytes) -> str:
    """What to say of an answer the parser refused for `reason`: what came back, when its
    first bytes (`first`, if the parser had them) are no HTTP status line at all."""
    if first and not (first.startswith(b"HTTP/") or b"HTTP/".startswith(first)):
        return describe(first)
    return reason
