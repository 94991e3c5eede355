"""llhttp's callbacks turned into events (http/events.py): what the request and response
parsers share, with the limits and checks a proxy adds to llhttp's own."""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import httptools

from ..errors import (
    BadRequest,
    ClientError,
    HeadTooLarge,
)
from .events import (
    END,
    Data,
    Event,
    Framing,
    Headers,
    ProtocolError,
    Upgrade,
)
from .fields import content_length
from .watch import Watch, looked_at

# The members as Final globals for the parsers: compiled, each is a C static (a plain global
# is a dict lookup, and a read off the class costs ~50 ns on 3.11).
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
# Per header line: ": " and CRLF around name and value.
_LINE_OVERHEAD: Final = 4


class Stop(Exception):
    """Raised from a callback to stop llhttp after a head that has no body (HEAD responses)."""


class Parser:
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
                self._content_length = content_length(value)
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
                if isinstance(cause, Stop):
                    return
                if isinstance(cause, ClientError):
                    self._queue(ProtocolError(str(cause), cause))
                else:
                    reason = str(exc) or type(exc).__name__
                    # The message's first bytes were in this feed: what they were tells an app
                    # that speaks something else from one that speaks HTTP badly.
                    first = self._line_source or b""
                    self._queue(ProtocolError(reason, BadRequest(reason), first))
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
