"""HTTP/1.1 parsing without I/O: bytes in, events (http/events.py) out, in order.

llhttp (through httptools) does the parsing. On top of it we refuse what llhttp tolerates but a
proxy must not forward: Transfer-Encoding other than a single `chunked`, several Host headers,
HTTP/0.9 and 2.0 request lines, non-origin-form targets, oversized targets and heads, and
upgrade requests that carry a body (llhttp would treat that body as tunnel bytes). An upgrade to
h2c is not taken as one (`offers_h2c`): such a request is read on as HTTP/1.1.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Final

import httptools

from ..errors import (
    BadRequest,
    ClientError,
    HeadTooLarge,
    MethodNotAllowed,
    UriTooLong,
    VersionNotSupported,
)
from .events import (
    END,
    Data,
    Event,
    Framing,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgrade,
)
from .watch import FRAMING_NAMES, NO_WATCH, REQUEST_NAMES, Watch, looked_at

MAX_TARGET: Final = 8 * 1024
MAX_HEAD: Final = 64 * 1024
# Per header line: ": " and CRLF around name and value.
_LINE_OVERHEAD: Final = 4
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}
# Reason phrases found free of control characters: the few an app uses are checked once.
_CLEAN_REASONS: Final[set[bytes]] = {b"OK"}
_H2C: Final = b"h2c"

# The members as Final globals for the parsers: compiled, each is a C static (a plain global
# is a dict lookup, and a read off the class costs ~50 ns on 3.11).
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_UNTIL_CLOSE: Final = Framing.UNTIL_CLOSE


def _length(value: bytes) -> int:
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


def _request_version(source: bytes | None, method: bytes, target: bytes) -> bytes | None:
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


class _Stop(Exception):
    """Raised from a callback to stop llhttp after a head that has no body (HEAD responses)."""


class _Parser:
    """Shared callback plumbing: llhttp calls back, we queue events.

    `watch`: lowercase header names whose presence the heads report (`watched`), so that a
    policy that acts on a few names can pass heads without them untouched, without a loop; a
    name may map to the one (lowercase) value that does not count, else to None."""

    _parser: Any  # the llhttp parser the subclass made

    def __init__(self, max_head: int, watch: Watch, names: tuple[bytes, ...]) -> None:
        """`names`: the header names on_header looks at in this kind of message. An argument,
        not a class attribute the subclass overrides: mypyc sets a compiled class's attribute
        defaults base first, and the overridden one was never freed (one tuple leaked per
        parser, that is per connection; tests/test_heap.py counts the blocks at rest)."""
        self.events: deque[Event] = deque()
        # Bound once: compiled, a call through it skips the method lookup on the deque.
        self._queue = self.events.append
        self._watch = watch
        self._lengths, self._letters = looked_at(watch, names)
        self._fields = frozenset(names)  # the names on_header compares with, one by one
        self._watched = False
        self.dead = False
        self._max_head = max_head
        self.started = False  # bytes of a message not yet complete have been fed
        self._in_head = False  # within a message (`started`), the rest is body and trailers
        self._begun = 0  # messages begun, to tell one open head from the next
        self._head_size = 0  # counted when complete: target or reason; lines if they may be many
        self._feed_size = 0
        self._head_fed = 0  # bytes of the feeds the open head came in: a bound on its size
        self._head_counted = False  # its header lines are in _head_size
        self._quiet_bytes = 0  # fed after the head without a body byte or an end coming of it
        self._incomplete_head_bytes = 0
        self._headers: Headers = []
        self._start_text = b""  # the request target or the reason phrase, maybe in pieces
        self._te: bytes | None = None
        self._content_length: int | None = None
        self._hosts: list[bytes] = []
        self._expect_continue = False
        self._referer: bytes | None = None
        self._user_agent: bytes | None = None
        # The bytes being fed when a message begins at their start: its first line is there,
        # and the version can be read off it (_request_version, the status line's prefix)
        # without asking llhttp, whose get_http_version() formats a str from two ints: that
        # was 8 % of the compiled build's instructions per request.
        self._line_source: bytes | None = None
        # The head just parsed offered h2c: llhttp hands the connection over after it, and the
        # request parser takes it back (`RequestParser._read_on`).
        self._h2c = False

    # --- llhttp callbacks
    def on_message_begin(self) -> None:
        self.started = True
        self._in_head = True
        self._begun += 1
        self._watched = not self._watch  # not told what to watch: it may be anything
        self._head_fed = self._feed_size
        self._headers = []
        self._start_text = b""
        self._te = None
        self._content_length = None
        self._hosts = []
        self._expect_continue = False
        self._referer = self._user_agent = None

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called for every header line: kept lean. The head's size is checked when it is
        # complete (`_head_done`); what one feed holds bounds it meanwhile.
        if not self._in_head:
            # Trailer fields are dropped: they must never join the head handed out. They share
            # the head's limit, so the head's lines count now if `_head_done` did not add them.
            if not self._head_counted:
                self._head_counted = True
                self._grow(self._lines_size())
            self._grow(len(name) + len(value) + _LINE_OVERHEAD)
            return
        if (self._lengths >> len(name)) & 1 and (self._letters >> (name[0] & 31)) & 1:
            lower = name.lower()
            if lower in self._watch:
                allowed = self._watch[lower]
                if allowed is None or value.lower() != allowed:
                    self._watched = True
            # Some names with those keys are none of these (Connection, Keep-Alive...): a set
            # lookup (the hash is known by now) spares them the comparisons.
            if lower not in self._fields:
                pass
            elif lower == b"host":
                self._hosts.append(value)
            elif lower == b"content-length":
                self._content_length = _length(value)
            elif lower == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    self._bad(f"Transfer-Encoding {value.decode('latin-1')!r}: only 'chunked'")
                self._te = value
            elif lower == b"user-agent":
                self._user_agent = value
            elif lower == b"referer":
                self._referer = value
            elif lower == b"expect" and value.strip().lower() == b"100-continue":
                self._expect_continue = True
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._queue(Data(body))

    def on_message_complete(self) -> None:
        self.started = False
        self._queue(END)

    @property
    def idle(self) -> bool:
        """Between messages with nothing pending: the connection may carry the next one."""
        return not (self.events or self.dead or self.started)

    # --- helpers
    def _grow(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._max_head:
            raise HeadTooLarge(f"head larger than {self._max_head} bytes")

    def _bad(self, reason: str) -> None:
        raise BadRequest(reason)

    def _framing(self, otherwise: Framing) -> Framing:
        """`otherwise`: the framing of a message without framing headers."""
        if self._te is not None:
            return _CHUNKED
        if self._content_length is not None:
            return _LENGTH
        return otherwise

    def close(self) -> None:
        """Done with: llhttp's parser, which holds this one's callbacks, is let go (so both
        are freed by reference counting, not left as a cycle for the GC); feeds do nothing."""
        self.dead = True
        self._parser = None

    def feed(self, data: bytes) -> None:
        # A loop only for heads that offered h2c, which llhttp hands over: then the parser
        # reads on from where it stopped (`_read_on`), as many times as there are such heads.
        while not self.dead and data:
            open_head = self._begun if self._in_head else -1
            queued = len(self.events)
            self._feed_size = len(data)
            if open_head >= 0:
                self._head_fed += len(data)
            self._line_source = None if self.started else data
            try:
                self._parser.feed_data(data)
                self._line_source = None
            except httptools.HttpParserUpgrade as exc:
                if not self._h2c:
                    self.dead = True
                    self._queue(Upgrade(data[exc.args[0] :]))
                    return
                # No upgrade after all (offers_h2c): read on after the head, out of this block.
                rest = data[exc.args[0] :]
            except httptools.HttpParserError as exc:
                self.dead = True
                cause = exc.__context__
                if isinstance(cause, _Stop):
                    return
                if isinstance(cause, ClientError):
                    self._queue(ProtocolError(str(cause), cause))
                else:
                    reason = str(exc) or type(exc).__name__
                    self._queue(ProtocolError(reason, BadRequest(reason)))
                return
            else:
                if self._in_head and self._begun == open_head:
                    # The same head was open before and after this feed, so all of it was head:
                    # bound what llhttp buffers for a head that never ends.
                    self._incomplete_head_bytes += len(data)
                    if self._incomplete_head_bytes > self._max_head:
                        self.dead = True
                        error = HeadTooLarge(f"head larger than {self._max_head} bytes")
                        self._queue(ProtocolError(str(error), error))
                elif not self._in_head and self.started and len(self.events) == queued:
                    # Past the head, bytes that gave no body and no end: chunk framing, or a trailer
                    # line llhttp buffers until it ends. Bounded like the head.
                    self._quiet_bytes += len(data)
                    if self._quiet_bytes > self._max_head:
                        self.dead = True
                        error = HeadTooLarge(f"trailers larger than {self._max_head} bytes")
                        self._queue(ProtocolError(str(error), error))
                else:
                    self._quiet_bytes = 0
                return
            self._read_on()
            data = rest

    def _read_on(self) -> None:
        """Go on as HTTP/1.1 after a head llhttp took for an upgrade."""
        raise NotImplementedError  # only requests offer h2c

    def _lines_size(self) -> int:
        return sum(len(name) + len(value) + _LINE_OVERHEAD for name, value in self._headers)

    def _head_done(self) -> None:
        self._head_size = len(self._start_text)
        # Counted, a line can exceed its bytes on the wire (`a:` is 4 bytes, counts 5), so only
        # a head that came in less than half the limit is surely under it.
        self._head_counted = self._head_fed + self._head_size > self._max_head // 2
        if self._head_counted:
            self._grow(self._lines_size())
        self._in_head = False
        self._incomplete_head_bytes = 0


class RequestParser(_Parser):
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
        version = _request_version(self._line_source, method, target)
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


class ResponseParser(_Parser):
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
            raise _Stop
