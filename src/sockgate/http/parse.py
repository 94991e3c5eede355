"""HTTP/1.1 parsing without I/O: bytes in, events (http/events.py) out, in order.

llhttp (through httptools) does the parsing. On top of it we refuse what llhttp tolerates but a
proxy must not forward: Transfer-Encoding other than a single `chunked`, several Host headers,
HTTP/0.9 and 2.0 request lines, non-origin-form targets, oversized targets and heads, and
upgrade requests that carry a body (llhttp would treat that body as tunnel bytes). An upgrade to
h2c is not taken as one (`offers_h2c`): such a request is read on as HTTP/1.1.
"""

from __future__ import annotations

import re
from typing import Final

import httptools

from ..errors import (
    MethodNotAllowed,
    UriTooLong,
    VersionNotSupported,
)
from .events import (
    END,
    Framing,
    RequestHead,
    ResponseHead,
)
from .fields import offers_h2c, request_version
from .llhttp import Parser, Stop
from .watch import FRAMING_NAMES, NO_WATCH, REQUEST_NAMES, Watch

MAX_TARGET: Final = 8 * 1024
MAX_HEAD: Final = 64 * 1024
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}
# Reason phrases found free of control characters: the few an app uses are checked once.
_CLEAN_REASONS: Final[set[bytes]] = {b"OK"}

# The members as Final globals for the parsers: compiled, each is a C static (a plain global
# is a dict lookup, and a read off the class costs ~50 ns on 3.11).
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_UNTIL_CLOSE: Final = Framing.UNTIL_CLOSE


class RequestParser(Parser):
    """Requests from a client, in order; pipelined requests queue up as events."""

    def __init__(
        self,
        *,
        max_target: int = MAX_TARGET,
        max_head: int = MAX_HEAD,
        watch: Watch = NO_WATCH,
    ) -> None:
        super().__init__(max_head, watch, REQUEST_NAMES)
        self._max_target = max_target
        self._parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self._start_text += url
        if len(self._start_text) > self._max_target:
            raise UriTooLong(f"request target longer than {self._max_target} bytes")

    def on_headers_complete(self) -> None:
        self._head_done()
        parser = self._parser
        method: bytes = parser.get_method()
        target = self._start_text
        version = request_version(self._line_source, method, target)
        self._line_source = None  # a next message in the same feed begins further on
        if version is None:
            text = parser.get_http_version()
            version = _VERSIONS.get(text)
            if version is None:
                raise VersionNotSupported(f"HTTP/{text} is not supported")
        if method == b"CONNECT":
            raise MethodNotAllowed("CONNECT is not supported: sockgate is not a forward proxy")
        if version == b"1.0" and self._te is not None:
            # RFC 9112 6.1: such framing is faulty; refusing is simpler than guessing.
            self._bad("Transfer-Encoding in an HTTP/1.0 request")
        if target[:1] != b"/":  # (a slice costs half what a startswith call does)
            self._bad("request target must be a path starting with '/' (origin-form)")
        hosts = self._hosts
        if len(hosts) > 1:
            self._bad("more than one Host header")
        if version == b"1.1" and not hosts:
            self._bad("HTTP/1.1 request without a Host header")
        upgrade = bool(parser.should_upgrade())
        if upgrade and offers_h2c(self._headers):
            upgrade = False  # a plain request (see offers_h2c), whose body is read as one
            self._h2c = True
        framing = self._framing(_NONE)  # a request without framing headers has no body
        if upgrade and framing is not _NONE:
            self._bad("an upgrade request must not carry a body")
        self._queue(
            RequestHead(  # positional: built for every request
                method,
                target,
                version,
                self._headers,
                bool(parser.should_keep_alive()),
                upgrade,
                framing,
                self._content_length,
                hosts[0] if hosts else None,
                self._expect_continue,
                self._watched,
                self._referer,
                self._user_agent,
            )
        )

    def _read_on(self) -> None:
        """llhttp handed the connection over after a head that offered h2c (`offers_h2c`),
        ending the message at its head. A new llhttp parser goes on from there as HTTP/1.1.
        llhttp also skipped the body and lets nothing more follow a message that does not keep
        the connection alive: for those, the new parser first reads a made-up head with the
        same framing and Connection, whose events are taken off the queue, then the body."""
        self._h2c = False
        self._quiet_bytes = self._incomplete_head_bytes = 0
        parser = httptools.HttpRequestParser(self)
        self._parser = parser
        events = self.events
        end = events.pop()
        head = events.pop()
        assert end is END, end
        assert isinstance(head, RequestHead), head
        body = self._te is not None or bool(self._content_length)
        if body or not head.keep_alive:
            framing = b""
            if self._te is not None:
                framing = b"Transfer-Encoding: chunked\r\n"
            elif self._content_length:
                framing = b"Content-Length: %d\r\n" % self._content_length
            close = b"" if head.keep_alive else b"Connection: close\r\n"
            parser.feed_data(b"POST / HTTP/1.1\r\nHost: h2c\r\n%s%s\r\n" % (framing, close))
            if not body:
                events.pop()  # the made-up message's end
            events.pop()  # and its head
        events.append(head)
        if not body:
            events.append(END)


class ResponseParser(Parser):
    """One app connection's responses. Set `head_request` before each HEAD exchange."""

    def __init__(self, *, max_head: int = MAX_HEAD, watch: Watch = NO_WATCH) -> None:
        super().__init__(max_head, watch, FRAMING_NAMES)
        self.head_request = False
        self._parser = httptools.HttpResponseParser(self)

    def on_status(self, reason: bytes) -> None:
        self._start_text += reason

    def on_headers_complete(self) -> None:
        self._head_done()
        parser = self._parser
        source = self._line_source
        self._line_source = None
        prefix = b"" if source is None else source[:9]  # a slice: mypyc compiles it to C
        plain = prefix == b"HTTP/1.1 " or prefix == b"HTTP/1.0 "
        if not plain and parser.get_http_version() not in _VERSIONS:
            self._bad(f"HTTP/{parser.get_http_version()} status line")
        status: int = parser.get_status_code()
        if not 100 <= status <= 999:
            self._bad(f"status {status} is not a three-digit code")
        reason = self._start_text
        if reason not in _CLEAN_REASONS:
            if _CONTROL.search(reason):
                self._bad("control characters in the reason phrase")
            if len(_CLEAN_REASONS) < 64:
                _CLEAN_REASONS.add(reason)
        no_body = self.head_request or status < 200 or status in (204, 304)
        head = ResponseHead(  # positional: built for every response
            status,
            reason,
            self._headers,
            bool(parser.should_keep_alive()),
            _NONE if no_body else self._framing(_UNTIL_CLOSE),
            self._content_length,
            self._watched,
        )
        self._queue(head)
        if self.head_request and status >= 200:
            # llhttp cannot be told that a HEAD response has no body; stop it here. The
            # connection is then not reused, since nothing says where the next response starts.
            self._queue(END)
            raise Stop
