"""The sans-IO HTTP/1.1 core: events for whole and split input, every framing rejection.

Events are consumed the way the proxy consumes them: after each feed, everything queued is popped
and snapshotted (deep-copied). Feeding the same bytes split anywhere must give the same events.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence

import pytest

from sockgate.errors import (
    BadRequest,
    ClientError,
    HeadTooLarge,
    MethodNotAllowed,
    UriTooLong,
    VersionNotSupported,
)
from sockgate.http.events import (
    END,
    Data,
    EndOfMessage,
    Framing,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgrade,
)
from sockgate.http.parse import MAX_HEAD, MAX_TARGET, RequestParser, ResponseParser
from sockgate.http.serialise import LAST_CHUNK, chunk_header, request_head, response_head

Parser = RequestParser | ResponseParser


# --- helpers ----------------------------------------------------------------------------------


def snapshot(event: object) -> object:
    """A comparable copy of an event as it is when popped (ProtocolError: its error class).
    Made through the class's own __init__ (dataclasses.replace): copy.deepcopy would make the
    object without it, which a compiled class (mypyc) refuses."""
    if isinstance(event, ProtocolError):
        return ("ProtocolError", type(event.error))
    assert dataclasses.is_dataclass(event)
    assert not isinstance(event, type)
    fields = {f.name: copy.deepcopy(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return dataclasses.replace(event, **fields)


def merged(events: Iterable[object]) -> list[object]:
    """Consecutive Data events joined, empty ones dropped: chunking of the body is not an event."""
    out: list[object] = []
    for event in events:
        if isinstance(event, Data):
            if not event.data:
                continue
            if out and isinstance(out[-1], Data):
                out[-1] = Data(out[-1].data + event.data)
                continue
        out.append(event)
    return out


def consume(parser: Parser, pieces: Iterable[bytes]) -> list[object]:
    """Feed piece by piece, popping every queued event after each feed, as the proxy does."""
    out: list[object] = []
    for piece in pieces:
        parser.feed(piece)
        while parser.events:
            out.append(snapshot(parser.events.popleft()))
    return merged(out)


def req(data: bytes | Sequence[bytes]) -> list[object]:
    return consume(RequestParser(), [data] if isinstance(data, bytes) else data)


def resp(data: bytes | Sequence[bytes], *, head_request: bool = False) -> list[object]:
    parser = ResponseParser()
    parser.head_request = head_request
    return consume(parser, [data] if isinstance(data, bytes) else data)


def two_pieces(data: bytes) -> Iterable[tuple[int, list[bytes]]]:
    for offset in range(1, len(data)):
        yield offset, [data[:offset], data[offset:]]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def only_error(events: list[object]) -> type[ClientError]:
    assert events, "no event at all"
    last = events[-1]
    assert isinstance(last, tuple), f"expected a ProtocolError last, got {events!r}"
    assert last[0] == "ProtocolError"
    return last[1]


def error_events(data: bytes | Sequence[bytes], cls: type[Parser] = RequestParser) -> list:
    """The raw events (not snapshots), to look at reason and error instances."""
    parser = cls()
    for piece in [data] if isinstance(data, bytes) else data:
        parser.feed(piece)
    return list(parser.events)


def heads(events: list[object]) -> list[RequestHead | ResponseHead]:
    return [e for e in events if isinstance(e, RequestHead | ResponseHead)]


GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


# --- requests: simple shapes ------------------------------------------------------------------


def test_simple_get() -> None:
    events = req(b"GET /a?b=c HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n")
    assert len(events) == 2
    head, end = events
    assert isinstance(head, RequestHead)
    assert head.method == b"GET"
    assert head.target == b"/a?b=c"
    assert head.version == b"1.1"
    assert head.headers == [(b"Host", b"localhost:8080"), (b"Accept", b"*/*")]
    assert head.host == b"localhost:8080"
    assert head.keep_alive is True
    assert head.upgrade is False
    assert head.framing is Framing.NONE
    assert head.content_length is None
    assert head.expect_continue is False
    assert isinstance(end, EndOfMessage)


def test_http10_without_host_is_accepted_and_not_keep_alive() -> None:
    head, end = req(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.version == b"1.0"
    assert head.host is None
    assert head.keep_alive is False
    assert isinstance(end, EndOfMessage)


def test_content_length_body() -> None:
    events = req(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    head, data, end = events
    assert isinstance(head, RequestHead)
    assert head.framing is Framing.LENGTH
    assert head.content_length == 5
    assert data == Data(b"hello")
    assert isinstance(end, EndOfMessage)


def test_content_length_zero_has_length_framing_and_no_data() -> None:
    head, end = req(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.framing is Framing.LENGTH
    assert head.content_length == 0
    assert isinstance(end, EndOfMessage)


def test_request_body_waits_for_its_bytes() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
    events = [parser.events.popleft() for _ in range(len(parser.events))]
    assert [type(e) for e in events] == [RequestHead, Data]
    parser.feed(b"lo")
    assert list(parser.events) == [Data(b"lo"), END]


def test_chunked_body_with_extensions_and_trailer() -> None:
    raw = (
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;name=value\r\nhello\r\n6;a;b="q"\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n'
    )
    head, data, end = req(raw)
    assert isinstance(head, RequestHead)
    assert head.framing is Framing.CHUNKED
    assert head.content_length is None
    assert data == Data(b"hello world")
    assert isinstance(end, EndOfMessage)


def test_chunked_is_case_insensitive() -> None:
    head, end = req(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.framing is Framing.CHUNKED
    assert isinstance(end, EndOfMessage)


def test_trailer_fields_do_not_join_the_request_head() -> None:
    # The head is an event of its own: fields that arrive after the body (trailers) must not be
    # appended to it, or a trailer becomes a header the app receives (e.g. a second Host).
    parser = RequestParser()
    parser.feed(
        b"POST / HTTP/1.1\r\nHost: good\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nHost: evil\r\nX-Trailer: 1\r\n\r\n"
    )
    head = parser.events[0]
    assert isinstance(head, RequestHead)
    assert head.headers == [(b"Host", b"good"), (b"Transfer-Encoding", b"chunked")]


def test_trailer_fields_do_not_join_the_response_head() -> None:
    parser = ResponseParser()
    parser.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nSet-Cookie: late=1\r\n\r\n"
    )
    head = parser.events[0]
    assert isinstance(head, ResponseHead)
    assert head.headers == [(b"Transfer-Encoding", b"chunked")]


def test_expect_100_continue_is_flagged() -> None:
    head, data, _ = req(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok"
    )
    assert isinstance(head, RequestHead)
    assert head.expect_continue is True
    assert data == Data(b"ok")


def test_pipelined_requests_in_one_feed() -> None:
    raw = (
        b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    events = req(raw)
    assert [type(e) for e in events] == [
        RequestHead,
        EndOfMessage,
        RequestHead,
        Data,
        EndOfMessage,
        RequestHead,
        EndOfMessage,
    ]
    assert [h.target for h in heads(events)] == [b"/one", b"/two", b"/three"]
    assert events[3] == Data(b"abc")


def test_upgrade_hands_over_trailing_bytes() -> None:
    parser = RequestParser()
    parser.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x05hello"
    )
    events = list(parser.events)
    assert [type(e) for e in events] == [RequestHead, EndOfMessage, Upgrade]
    assert events[0].upgrade is True
    assert events[0].framing is Framing.NONE
    assert events[2] == Upgrade(b"\x81\x05hello")
    assert parser.dead is True


def test_upgrade_at_end_of_feed_has_empty_trailing_and_parser_stops() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n")
    assert list(parser.events)[-1] == Upgrade(b"")
    parser.feed(b"tunnel bytes are not HTTP")
    assert len(parser.events) == 3  # nothing new: the tunnel owns the bytes now


def test_upgrade_trailing_bytes_for_every_split() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n"
    raw = head + b"payload"
    for offset, pieces in two_pieces(raw):
        parser = RequestParser()
        fed = 0
        for piece in pieces:
            parser.feed(piece)
            fed += len(piece)
            if parser.dead:
                break
        events = list(parser.events)
        assert [type(e) for e in events] == [RequestHead, EndOfMessage, Upgrade], offset
        # The trailing bytes plus what was not fed yet are exactly the tunnel's first bytes.
        assert events[2].trailing + raw[fed:] == b"payload", offset


# --- h2c: never an upgrade (h2c smuggling), read on as HTTP/1.1 -------------------------------

H2C = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
H2C_REQUESTS = {
    "get": b"GET /h2c HTTP/1.1\r\nHost: h\r\n" + H2C + b"\r\n" + NEXT,
    "content-length": (
        b"POST /h2c HTTP/1.1\r\nHost: h\r\n" + H2C + b"Content-Length: 5\r\n\r\nhello" + NEXT
    ),
    "chunked-trailer": (
        b"POST /h2c HTTP/1.1\r\nHost: h\r\n"
        + H2C
        + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n"
        + NEXT
    ),
    "among-others": (
        b"GET /h2c HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket, H2C/1\r\n\r\n"
        + NEXT
    ),
    "twice": b"GET /h2c HTTP/1.1\r\nHost: h\r\n"
    + H2C
    + b"\r\n"
    + NEXT.replace(b"\r\n\r\n", b"\r\n" + H2C + b"\r\n")
    + NEXT,
}


@pytest.mark.parametrize("raw", H2C_REQUESTS.values(), ids=H2C_REQUESTS.keys())
def test_an_h2c_upgrade_is_a_plain_request_and_the_next_one_is_parsed(raw: bytes) -> None:
    """llhttp hands the connection over after such a head; the parser reads on as HTTP/1.1,
    body included, so the client cannot speak HTTP/2 past the proxy (h2c smuggling)."""
    events = req(raw)
    found = heads(events)
    assert all(isinstance(h, RequestHead) and not h.upgrade for h in found), events
    assert found[0].target == b"/h2c"
    assert found[-1].target == b"/next"
    assert not any(isinstance(e, Upgrade | tuple) for e in events), events
    assert isinstance(events[-1], EndOfMessage)
    if found[0].method == b"POST":
        assert events[1] == Data(b"hello"), events
        assert isinstance(events[2], EndOfMessage), events
    for offset, pieces in two_pieces(raw):
        assert req(pieces) == events, f"split at {offset}"
    assert req(byte_by_byte(raw)) == events


def test_h2c_without_keep_alive_lets_nothing_follow() -> None:
    """As after any request that ends the connection: what follows is refused, not parsed."""
    events = req(b"GET /h2c HTTP/1.0\r\n" + H2C + b"\r\n" + NEXT)
    assert [type(e) for e in events] == [RequestHead, EndOfMessage, tuple]
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.keep_alive is False
    assert head.upgrade is False


def test_many_h2c_requests_in_one_feed() -> None:
    """Each h2c head makes the parser read on with a new llhttp parser: in a loop, not by
    recursion, however many come in one read."""
    one = b"GET /h2c HTTP/1.1\r\nHost: h\r\n" + H2C + b"\r\n"
    events = req(one * 3000 + NEXT)
    assert len(heads(events)) == 3001
    assert not any(isinstance(e, Upgrade | tuple) for e in events)


def test_an_upgrade_to_another_protocol_is_still_one() -> None:
    """An Upgrade that names h2c only inside another token (`h2cx`) is not an h2c offer."""
    events = req(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2cx\r\n\r\n")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage, Upgrade]


# --- the split property -----------------------------------------------------------------------

VALID_REQUESTS = {
    "simple": GET,
    "http10-keepalive": b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "content-length": (
        b"POST /app1/upload?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 20\r\n\r\n"
        b"\r\n\r\nGET / HTTP/1.1\r\n"  # body bytes that look like a request
    ),
    "chunked-ext-trailer": (
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b'6;a;b="q"\r\n world\r\n'
        b"A\r\n0123456789\r\n"
        b"0;last\r\nX-Checksum: abc\r\nX-Other: 2\r\n\r\n"
    ),
    "pipelined": (
        b"GET /one HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"PUT /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
        b"DELETE /four HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ),
    "expect-continue": (
        b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
    ),
    "many-headers": b"GET /m HTTP/1.1\r\nHost: h\r\n"
    + b"".join(b"X-H%d: value-%d\r\n" % (i, i) for i in range(20))
    + b"\r\n",
}


@pytest.mark.parametrize("raw", VALID_REQUESTS.values(), ids=VALID_REQUESTS.keys())
def test_request_split_at_every_offset_gives_the_same_events(raw: bytes) -> None:
    whole = req(raw)
    assert whole
    assert isinstance(whole[-1], EndOfMessage), whole
    assert not any(isinstance(e, tuple) for e in whole)
    for offset, pieces in two_pieces(raw):
        assert req(pieces) == whole, f"split at {offset}"


@pytest.mark.parametrize("raw", VALID_REQUESTS.values(), ids=VALID_REQUESTS.keys())
def test_request_byte_by_byte_gives_the_same_events(raw: bytes) -> None:
    assert req(byte_by_byte(raw)) == req(raw)


VALID_RESPONSES = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "chunked-trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;x=y\r\ndata\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    ),
    "continue-then-final": (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    ),
    "keepalive-sequence": (
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("raw", VALID_RESPONSES.values(), ids=VALID_RESPONSES.keys())
def test_response_split_at_every_offset_and_byte_by_byte(raw: bytes) -> None:
    whole = resp(raw)
    assert whole
    assert isinstance(whole[-1], EndOfMessage), whole
    for offset, pieces in two_pieces(raw):
        assert resp(pieces) == whole, f"split at {offset}"
    assert resp(byte_by_byte(raw)) == whole


def test_large_body_then_next_head_split_anywhere_is_not_head_too_large() -> None:
    # A feed that ends a big body and starts the next request's head: only the bytes of the
    # open head count towards MAX_HEAD, not the body bytes before it in the same feed.
    body = b"b" * (MAX_HEAD + 1000)
    first = b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    second = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    expected = req(first + second)
    kinds = [RequestHead, Data, EndOfMessage, RequestHead, EndOfMessage]
    assert [type(e) for e in expected] == kinds
    for offset in range(1, len(second)):
        pieces = [first + second[:offset], second[offset:]]
        assert req(pieces) == expected, f"second head split at {offset}"


def test_large_response_body_then_next_head_in_one_feed_is_not_head_too_large() -> None:
    body = b"b" * (MAX_HEAD + 1000)
    first = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    second = b"HTTP/1.1 204 No Content\r\n\r\n"
    expected = resp(first + second)
    assert len(heads(expected)) == 2
    assert resp([first + second[:5], second[5:]]) == expected


# --- request rejections -----------------------------------------------------------------------


def _post(*headers: bytes, body: bytes = b"") -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: h\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    )


REJECTED_REQUESTS: dict[str, tuple[bytes, type[ClientError]]] = {
    "cl-then-te": (
        _post(b"Content-Length: 3", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        BadRequest,
    ),
    "te-then-cl": (
        _post(b"Transfer-Encoding: chunked", b"Content-Length: 3", body=b"0\r\n\r\n"),
        BadRequest,
    ),
    "two-content-lengths": (
        _post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"),
        BadRequest,
    ),
    "content-length-list": (_post(b"Content-Length: 3, 3", body=b"abc"), BadRequest),
    "content-length-negative": (_post(b"Content-Length: -1"), BadRequest),
    "content-length-plus": (_post(b"Content-Length: +3", body=b"abc"), BadRequest),
    "te-gzip-chunked": (_post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), BadRequest),
    "te-chunked-chunked": (
        _post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
        BadRequest,
    ),
    "te-duplicate-headers": (
        _post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        BadRequest,
    ),
    "te-gzip": (_post(b"Transfer-Encoding: gzip", body=b"abc"), BadRequest),
    "te-identity": (_post(b"Transfer-Encoding: identity", body=b"abc"), BadRequest),
    "te-xchunked": (_post(b"Transfer-Encoding: xchunked"), BadRequest),
    "space-in-header-name": (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n", BadRequest),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost: h\r\nName : v\r\n\r\n", BadRequest),
    "empty-header-name": (b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", BadRequest),
    "nul-in-name": (b"GET / HTTP/1.1\r\nHost: h\r\nA\x00: v\r\n\r\n", BadRequest),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\x00c\r\n\r\n", BadRequest),
    "cr-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n", BadRequest),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n c\r\n\r\n", BadRequest),
    "bare-lf-everywhere": (b"GET / HTTP/1.1\nHost: h\n\n", BadRequest),
    "bare-lf-after-header": (b"GET / HTTP/1.1\r\nHost: h\nA: b\r\n\r\n", BadRequest),
    "leading-space-header": (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", BadRequest),
    "http09": (b"GET /\r\n\r\n", VersionNotSupported),
    # An HTTP/0.9 line to llhttp, whose target merely ends like a version: not read as 1.1.
    "http09-target-ending-like-a-version": (
        b"GET /aHTTP/1.1\r\nHost: h\r\n\r\n",
        VersionNotSupported,
    ),
    "http2-version": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", VersionNotSupported),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", BadRequest),
    "absolute-form": (b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", BadRequest),
    "authority-form": (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", MethodNotAllowed),
    "asterisk-form": (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", BadRequest),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest),
    "two-hosts-same": (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", BadRequest),
    "http11-without-host": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", BadRequest),
    "upgrade-with-content-length": (
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        BadRequest,
    ),
    "upgrade-with-chunked": (
        b"POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        BadRequest,
    ),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", BadRequest),
    "target-too-long": (
        b"GET /" + b"a" * MAX_TARGET + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        UriTooLong,
    ),
    "one-huge-header-line": (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * (MAX_HEAD + 10) + b"\r\n\r\n",
        HeadTooLarge,
    ),
    "many-headers": (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        + b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 60) for i in range(MAX_HEAD // 60))
        + b"\r\n",
        HeadTooLarge,
    ),
}


@pytest.mark.parametrize(("raw", "error"), REJECTED_REQUESTS.values(), ids=REJECTED_REQUESTS.keys())
def test_request_rejections(raw: bytes, error: type[ClientError]) -> None:
    events = error_events(raw)
    assert events, "nothing happened"
    last = events[-1]
    assert isinstance(last, ProtocolError), events
    assert type(last.error) is error
    assert last.reason
    # No head of the refused request is ever handed out to be forwarded.
    assert not any(isinstance(e, RequestHead) for e in events), events


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (REJECTED_REQUESTS["two-hosts"][0], 400),
        (REJECTED_REQUESTS["http2-version"][0], 505),
        (REJECTED_REQUESTS["target-too-long"][0], 414),
        (REJECTED_REQUESTS["one-huge-header-line"][0], 431),
    ],
)
def test_rejection_status(raw: bytes, status: int) -> None:
    last = error_events(raw)[-1]
    assert isinstance(last, ProtocolError)
    assert last.error.status == status


def test_parser_is_dead_after_an_error() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert parser.dead is True
    count = len(parser.events)
    parser.feed(GET)
    assert len(parser.events) == count


@pytest.mark.parametrize(
    ("chunk_size", "name"),
    [(b"zz", "junk"), (b"fffffffffffffffffff", "overflow"), (b"-1", "negative"), (b"", "empty")],
)
def test_invalid_chunk_size_is_rejected_after_the_head(chunk_size: bytes, name: str) -> None:
    events = error_events(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk_size + b"\r\n"
    )
    assert [type(e) for e in events] == [RequestHead, ProtocolError], name
    assert type(events[-1].error) is BadRequest


def test_target_of_exactly_max_target_bytes_is_accepted() -> None:
    target = b"/" + b"a" * (MAX_TARGET - 1)
    head, _ = req(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.target == target


def test_target_too_long_fed_in_pieces() -> None:
    raw = REJECTED_REQUESTS["target-too-long"][0]
    assert only_error(req([raw[i : i + 100] for i in range(0, len(raw), 100)])) is UriTooLong


@pytest.mark.parametrize("name", ["one-huge-header-line", "many-headers"])
@pytest.mark.parametrize("size", [1, 100, 4096])
def test_head_too_large_fed_in_pieces(name: str, size: int) -> None:
    raw = REJECTED_REQUESTS[name][0]
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
    assert only_error(req(pieces)) is HeadTooLarge


@pytest.mark.parametrize(
    "start",
    [
        [b"GET / HTTP/1.1\r\nHost: h\r\nX: "],
        # A trailer line: llhttp buffers it the same way, after the body's last chunk.
        [
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T: ",
        ],
    ],
    ids=["head", "trailer"],
)
def test_a_line_that_never_ends_is_bounded(start: list[bytes]) -> None:
    # Bytes without a line end: llhttp would buffer them; the parser must give up by itself.
    parser = RequestParser()
    for piece in start:
        parser.feed(piece)
    for _ in range(MAX_HEAD // 1000 + 2):
        parser.feed(b"v" * 1000)
    assert parser.dead is True
    last = parser.events[-1]
    assert isinstance(last, ProtocolError)
    assert type(last.error) is HeadTooLarge


def test_head_just_under_the_limit_is_accepted_in_pieces() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        + b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 100) for i in range(500))
        + b"\r\n"
    )
    assert len(raw) < MAX_HEAD
    events = req([raw[i : i + 7] for i in range(0, len(raw), 7)])
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]


@pytest.mark.parametrize(
    "raw", [v[0] for v in REJECTED_REQUESTS.values()], ids=list(REJECTED_REQUESTS)
)
def test_rejections_do_not_depend_on_how_bytes_are_split(raw: bytes) -> None:
    whole = req(raw)
    error = only_error(whole)
    step = max(1, len(raw) // 40)  # ~40 split points keep the huge cases fast
    for offset in range(1, len(raw), step):
        split = req([raw[:offset], raw[offset:]])
        assert only_error(split) is error, f"split at {offset}"
        assert split[:-1] == whole[:-1], f"split at {offset}"


@pytest.mark.parametrize(
    "garbage",
    [b"\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"BAD\n\n"],
)
def test_events_before_an_error_in_the_same_feed_are_delivered(garbage: bytes) -> None:
    parser = RequestParser()
    parser.feed(b"POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + garbage)
    events = list(parser.events)
    assert [type(e) for e in events] == [RequestHead, Data, EndOfMessage, ProtocolError]
    assert events[0].target == b"/ok"
    assert events[1] == Data(b"hi")
    assert isinstance(events[3].error, ClientError)


# --- responses --------------------------------------------------------------------------------


def test_response_with_content_length() -> None:
    head, data, end = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert isinstance(head, ResponseHead)
    assert head.status == 200
    assert head.reason == b"OK"
    assert head.headers == [(b"Content-Length", b"5"), (b"X-A", b"b")]
    assert head.framing is Framing.LENGTH
    assert head.content_length == 5
    assert head.keep_alive is True
    assert head.informational is False
    assert data == Data(b"hello")
    assert isinstance(end, EndOfMessage)


def test_chunked_response() -> None:
    head, data, end = resp(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n"
    )
    assert isinstance(head, ResponseHead)
    assert head.framing is Framing.CHUNKED
    assert data == Data(b"hi!!!")
    assert isinstance(end, EndOfMessage)


def test_informational_then_final_response() -> None:
    events = resp(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [type(e) for e in events] == [
        ResponseHead,
        EndOfMessage,
        ResponseHead,
        Data,
        EndOfMessage,
    ]
    first, final = heads(events)
    assert first.status == 100
    assert first.informational is True
    assert first.framing is Framing.NONE
    assert final.status == 200
    assert final.informational is False


def test_101_is_not_informational_and_hands_over() -> None:
    parser = ResponseParser()
    parser.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x02hi"
    )
    events = list(parser.events)
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage, Upgrade]
    assert events[0].status == 101
    assert events[0].informational is False
    assert events[2] == Upgrade(b"\x81\x02hi")
    assert parser.dead is True


def test_head_response_ends_at_its_head_and_kills_the_parser() -> None:
    parser = ResponseParser()
    parser.head_request = True
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    events = list(parser.events)
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage]
    assert events[0].framing is Framing.NONE
    assert events[0].content_length == 10  # kept, so the client sees the real length
    assert parser.dead is True
    parser.feed(b"0123456789")
    assert len(parser.events) == 2


def test_head_response_with_chunked_header_has_no_body() -> None:
    events = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head_request=True)
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage]
    assert events[0].framing is Framing.NONE


def test_head_request_still_reads_a_1xx_before_the_final_head() -> None:
    parser = ResponseParser()
    parser.head_request = True
    parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    events = list(parser.events)
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage, ResponseHead, EndOfMessage]
    assert [h.status for h in heads(events)] == [100, 200]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status
    events = resp(raw + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage, ResponseHead, EndOfMessage]
    assert events[0].status == status
    assert events[0].framing is Framing.NONE


def test_read_until_close_framing() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome")
    parser.feed(b" more")
    events = merged(parser.events)
    assert [type(e) for e in events] == [ResponseHead, Data]
    assert events[0].framing is Framing.UNTIL_CLOSE
    assert events[0].keep_alive is False
    assert events[1] == Data(b"some more")


def test_http10_response_without_length_reads_until_close() -> None:
    events = resp(b"HTTP/1.0 200 OK\r\n\r\nabc")
    assert events[0].framing is Framing.UNTIL_CLOSE
    assert events[1:] == [Data(b"abc")]


REJECTED_RESPONSES = {
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "garbage-status-line": b"hello world\r\n\r\n",
    "non-numeric-status": b"HTTP/1.1 abc OK\r\n\r\n",
    "http2-status-line": b"HTTP/2.0 200 OK\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "huge-head": b"HTTP/1.1 200 OK\r\nX: " + b"v" * (MAX_HEAD + 1) + b"\r\n\r\n",
}


@pytest.mark.parametrize("raw", REJECTED_RESPONSES.values(), ids=REJECTED_RESPONSES.keys())
def test_response_rejections(raw: bytes) -> None:
    parser = ResponseParser()
    parser.feed(raw)
    assert parser.dead is True
    last = parser.events[-1]
    assert isinstance(last, ProtocolError), list(parser.events)
    assert isinstance(last.error, ClientError)
    assert last.reason


# --- serialisers ------------------------------------------------------------------------------


def test_request_head_bytes() -> None:
    raw = request_head(b"POST", b"/a?b", [(b"Host", b"h:1"), (b"Content-Length", b"2")])
    assert raw == b"POST /a?b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\n\r\n"


def test_request_head_round_trips_through_the_parser() -> None:
    headers = [(b"Host", b"h"), (b"X-A", b"1"), (b"X-A", b"2"), (b"Content-Length", b"3")]
    head, data, _ = req(request_head(b"PUT", b"/x%20y", headers) + b"abc")
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.headers) == (b"PUT", b"/x%20y", headers)
    assert data == Data(b"abc")


def test_response_head_bytes() -> None:
    assert response_head(404, b"Not Found", [(b"Content-Length", b"0")]) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    )
    assert response_head(200, b"OK", [], version=b"1.0") == b"HTTP/1.0 200 OK\r\n\r\n"


def test_response_head_round_trips_through_the_parser() -> None:
    headers = [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Content-Length", b"0")]
    head, _ = resp(response_head(201, b"Created", headers))
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason, head.headers) == (201, b"Created", headers)


@pytest.mark.parametrize(
    ("size", "expected"), [(0, b"0\r\n"), (1, b"1\r\n"), (10, b"a\r\n"), (4096, b"1000\r\n")]
)
def test_chunk_header(size: int, expected: bytes) -> None:
    assert chunk_header(size) == expected


def test_chunks_written_with_the_serialisers_parse_back() -> None:
    head = request_head(b"POST", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")])
    body = b"".join(chunk_header(len(p)) + p + b"\r\n" for p in (b"x" * 17, b"yz")) + LAST_CHUNK
    _, data, end = req(head + body)
    assert data == Data(b"x" * 17 + b"yz")
    assert isinstance(end, EndOfMessage)


def test_head_and_trailers_share_the_limit_however_the_bytes_come() -> None:
    """The head's size is added up when it is complete only if it may be large; trailers that
    follow still count it, whether they come in the head's read or later."""
    head = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Pad: "
        + b"a" * (MAX_HEAD // 2 - 2000)
        + b"\r\n\r\n"
    )
    rest = b"5\r\nhello\r\n0\r\nX-T: " + b"b" * (MAX_HEAD * 3 // 5) + b"\r\n\r\n"
    assert only_error(req(head + rest)) is HeadTooLarge
    assert only_error(req([head, rest])) is HeadTooLarge
    # Each alone is under the limit.
    small_head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    kinds = [type(e) for e in req([small_head, rest])]
    assert kinds == [RequestHead, Data, EndOfMessage], kinds


def test_a_chunked_body_fed_slowly_is_not_mistaken_for_trailers() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (1000, b"d" * 1000) for _ in range(MAX_HEAD // 500))
    for i in range(0, len(body), 7):
        parser.feed(body[i : i + 7])
    parser.feed(b"0\r\n\r\n")
    assert not parser.dead
    assert type(parser.events[-1]) is EndOfMessage


@pytest.mark.parametrize("before", [b"", b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"])
def test_the_start_of_a_head_is_not_mistaken_for_trailers(before: bytes) -> None:
    # A feed that opens a head and ends inside it gives no event, as trailer bytes would: it is
    # bounded as head (when the head ends), not as trailers.
    parser = RequestParser(max_head=100)
    parser.feed(before)
    parser.events.clear()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"x" * 150)
    assert not parser.dead
    parser.feed(b"\r\n\r\n")
    [error] = parser.events
    assert isinstance(error, ProtocolError)
    assert error.reason == "head larger than 100 bytes"
