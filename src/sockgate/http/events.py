"""HTTP/1.1 messages as small events: what the parsers hand out and the exchange consumes.

A message is a head (RequestHead or ResponseHead), its body as Data, then END; or the parser
handed the connection over (Upgrade), or what came in cannot be forwarded (ProtocolError).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from ..errors import ClientError

Headers = list[tuple[bytes, bytes]]


class Framing(Enum):
    NONE = auto()  # no body at all (no framing headers, or HEAD, 1xx, 204, 304)
    LENGTH = auto()  # Content-Length, which may be 0
    CHUNKED = auto()  # Transfer-Encoding: chunked
    UNTIL_CLOSE = auto()  # responses only: the body ends when the app closes


# The per-message classes below write their own __init__ (init=False): mypyc, which compiles
# this module, keeps the one dataclasses generates as interpreted Python, the cost of several
# compiled exchanges each (see hatch_build.py). The dataclass still gives __eq__ and __repr__.


@dataclass(slots=True, init=False)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    keep_alive: bool
    upgrade: bool
    framing: Framing
    content_length: int | None
    host: bytes | None
    expect_continue: bool
    # Whether a header the parser was told to watch for appeared (unknown: assume so).
    watched: bool
    # For the access log (the last of each).
    referer: bytes | None
    user_agent: bytes | None

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers,
        keep_alive: bool,
        upgrade: bool,
        framing: Framing,
        content_length: int | None,
        host: bytes | None,
        expect_continue: bool,
        watched: bool = True,
        referer: bytes | None = None,
        user_agent: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.framing = framing
        self.content_length = content_length
        self.host = host
        self.expect_continue = expect_continue
        self.watched = watched
        self.referer = referer
        self.user_agent = user_agent


@dataclass(slots=True, init=False)
class ResponseHead:
    status: int
    reason: bytes
    headers: Headers
    keep_alive: bool
    framing: Framing
    content_length: int | None
    watched: bool  # as in RequestHead

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: Headers,
        keep_alive: bool,
        framing: Framing,
        content_length: int | None,
        watched: bool = True,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = keep_alive
        self.framing = framing
        self.content_length = content_length
        self.watched = watched

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True, init=False)
class Data:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True)
class EndOfMessage:
    pass


@dataclass(slots=True)
class Upgrade:
    """The parser handed over: `trailing` holds bytes that already belong to the new protocol."""

    trailing: bytes


@dataclass(slots=True)
class ProtocolError:
    """What was received cannot be forwarded. `reason` says why, for pages and logs; `first`,
    when the message's very first bytes could not be parsed, is what they were (an app that
    does not speak HTTP: `nothttp.detail`)."""

    reason: str
    error: ClientError
    first: bytes = b""


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgrade | ProtocolError
END: Final = EndOfMessage()
