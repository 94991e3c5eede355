"""Properties of the sans-IO HTTP/1.1 layer (issue 5): whatever the bytes and however they are
cut, the parsers never raise, and what they hand out is either a ProtocolError or messages that
are internally consistent and can be forwarded exactly.

- Valid requests and responses, built from the RFC 9112 grammar (origin-form targets, token
  header names, field values with obs-text, Content-Length or chunked bodies with random chunk
  splits, extensions and trailers, pipelined sequences), parse to exactly what was built, and
  feeding them split at any cut points gives the same events as feeding them at once.
- Any single-byte mutation (replace, insert, delete) of such input gives, whole or split, either
  a ProtocolError or a sequence of heads, data and ends where every end closes a head, body sizes
  match the framing, no data comes before a head, nothing comes after an error, and every head
  can be written back (`serialise.request_head` plus the proxy's own framing) and parses again
  to the same request. Random mutations run under hypothesis; a deterministic sweep tries every
  position of a few fixed pipelines with a set of bytes chosen to hit every grammar class.

Runs in a few seconds: hypothesis is derandomized and has no example database, so CI sees the
same examples every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockgate.http import fields
from sockgate.http.events import (
    Data,
    EndOfMessage,
    Framing,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgrade,
)
from sockgate.http.fields import offers_h2c
from sockgate.http.headers import HOP_BY_HOP
from sockgate.http.parse import MAX_HEAD, MAX_TARGET, RequestParser, ResponseParser
from sockgate.http.serialise import LAST_CHUNK, chunk_header, request_head

# On a failure hypothesis's pytest plugin imports libcst (to suggest a patch), whose import warns
# through mypy_extensions; with filterwarnings=error that would turn a readable failure into an
# INTERNALERROR that ends the whole run.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

PROPERTY = settings(
    database=None,
    derandomize=True,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MUTATION = settings(PROPERTY, max_examples=250)

Parser = RequestParser | ResponseParser
Headers = list[tuple[bytes, bytes]]

# --- the grammar (RFC 9110 5.1, 5.5; RFC 9112 3.2, 7.1) ------------------------------------------

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR_OBS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
FIELD_BYTES = frozenset(b"\t " + VCHAR_OBS)  # what a field value or a reason may hold
UNRESERVED = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
SUB_DELIMS = b"!$&'()*+,;="
PCHAR = UNRESERVED + SUB_DELIMS + b":@"
HEX = b"0123456789abcdefABCDEF"
# Names the parsers or the connection logic look at: generated only where a test means them.
SPECIAL_NAMES = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"proxy-connection",
        b"upgrade",
        b"expect",
        b"keep-alive",
        b"te",
        b"trailer",
    }
)
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND"]
BODY_METHODS = [b"POST", b"PUT", b"PATCH", b"DELETE"]

# Bytes for mutations: one or more of every class the grammar tells apart.
INTERESTING = sorted(
    set(b'\x00\x01\t\n\x0b\x0c\r "#%+,-./09:;=?@AFGHPTZ\\_afhkxz|~\x7f\x80\xa0\xff')
    | set(b"CEKLOchnklot")
)


def _bytes_of(alphabet: bytes, min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    """Bytes from `alphabet` (drawn as raw bytes and mapped: much faster than a list of picks)."""
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda raw: bytes(alphabet[b % len(alphabet)] for b in raw)
    )


header_names = _bytes_of(TCHAR, 1, 16).filter(lambda n: n.lower() not in SPECIAL_NAMES)


@st.composite
def field_values(draw: st.DrawFn) -> bytes:
    """field-value: no leading or trailing whitespace, SP/HTAB only inside, obs-text allowed."""
    if draw(st.booleans()):
        return b""
    first = draw(st.sampled_from(VCHAR_OBS))
    middle = draw(_bytes_of(VCHAR_OBS + b" \t", 0, 20))
    last = draw(st.sampled_from(VCHAR_OBS))
    return bytes([first]) + middle + (bytes([last]) if middle else b"")


def _pct() -> st.SearchStrategy[bytes]:
    return st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda t: b"%" + bytes(t))


segment = st.lists(
    st.one_of(st.sampled_from(PCHAR).map(lambda c: bytes([c])), _pct()), max_size=8
).map(b"".join)


@st.composite
def origin_targets(draw: st.DrawFn) -> bytes:
    """origin-form = absolute-path [ "?" query ]."""
    path = b"".join(b"/" + s for s in draw(st.lists(segment, min_size=1, max_size=4)))
    if draw(st.booleans()):
        query = draw(_bytes_of(PCHAR + b"/?", 0, 16))
        path += b"?" + query
    return path


chunk_ext = st.one_of(
    st.just(b""),
    _bytes_of(TCHAR, 1, 6).map(lambda n: b";" + n),
    st.tuples(_bytes_of(TCHAR, 1, 6), _bytes_of(TCHAR, 1, 6)).map(lambda t: b";%s=%s" % t),
    st.tuples(_bytes_of(TCHAR, 1, 6), _bytes_of(UNRESERVED + b" ", 0, 6)).map(
        lambda t: b';%s="%s"' % t
    ),
)


@st.composite
def chunk_sizes(draw: st.DrawFn, size: int) -> bytes:
    """A chunk size in hex: either case, sometimes with leading zeros (1*HEXDIG)."""
    digits = b"%x" % size
    if draw(st.booleans()):
        digits = digits.upper()
    return b"0" * draw(st.integers(0, 3)) + digits


@st.composite
def chunked_bodies(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` as chunks cut at random points, with extensions and trailer fields."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4))))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    wire = bytearray()
    for piece in pieces:
        if piece:
            wire += draw(chunk_sizes(len(piece))) + draw(chunk_ext) + b"\r\n" + piece + b"\r\n"
    wire += b"0" * draw(st.integers(1, 2)) + draw(chunk_ext) + b"\r\n"
    for name, value in draw(st.lists(st.tuples(header_names, field_values()), max_size=2)):
        wire += name + b": " + value + b"\r\n"
    return bytes(wire + b"\r\n")


# --- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    framing: Framing
    keep_alive: bool
    expect_continue: bool
    wire: bytes


def _field_lines(headers: Iterable[tuple[bytes, bytes]], ows: Sequence[bytes]) -> bytes:
    return b"".join(
        name + b":" + pad + value + b"\r\n" for (name, value), pad in zip(headers, ows, strict=True)
    )


@st.composite
def requests(draw: st.DrawFn, *, last: bool) -> Req:
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    framing = draw(st.sampled_from([Framing.NONE, Framing.LENGTH, Framing.CHUNKED]))
    method = draw(st.sampled_from(BODY_METHODS if framing is not Framing.NONE else METHODS))
    body = b"" if framing is Framing.NONE else draw(st.binary(max_size=40))
    if framing is Framing.CHUNKED and version == b"1.0":
        framing = Framing.LENGTH  # RFC 9112 6.1: Transfer-Encoding is faulty framing in 1.0
    headers = [(draw(header_names), draw(field_values())) for _ in range(draw(st.integers(0, 4)))]
    if version == b"1.1" or draw(st.booleans()):
        host = draw(st.sampled_from([b"Host", b"host", b"HOST"]))
        headers.append((host, draw(st.sampled_from([b"localhost:8080", b"127.0.0.1", b"a.b"]))))
    if framing is Framing.LENGTH:
        cl_name = draw(st.sampled_from([b"Content-Length", b"content-length"]))
        headers.append((cl_name, b"%d" % len(body)))
    elif framing is Framing.CHUNKED:
        te_name = draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]))
        headers.append((te_name, draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED"]))))
    # A connection is kept for the next request only when the version says so; the last request
    # may also ask to close (llhttp refuses data after `Connection: close`).
    if version == b"1.0":
        connection = b"keep-alive" if not last else draw(st.sampled_from([b"keep-alive", None]))
    else:
        choices = [None, b"keep-alive", b"close"] if last else [None, b"keep-alive"]
        connection = draw(st.sampled_from(choices))
    if connection is not None:
        headers.append((b"Connection", connection))
    expect = framing is not Framing.NONE and draw(st.booleans())
    if expect:
        headers.append((b"Expect", b"100-continue"))
    headers = draw(st.permutations(headers))
    ows = [draw(st.sampled_from([b" ", b"", b"\t", b"  "])) for _ in headers]
    wire = b"%s %s HTTP/%s\r\n" % (method, draw(origin_targets()), version)
    target = wire.split(b" ")[1]
    wire += _field_lines(headers, ows) + b"\r\n"
    if framing is Framing.LENGTH:
        wire += body
    elif framing is Framing.CHUNKED:
        wire += draw(chunked_bodies(body))
    keep_alive = connection == b"keep-alive" if version == b"1.0" else connection != b"close"
    return Req(method, target, version, tuple(headers), body, framing, keep_alive, expect, wire)


@st.composite
def pipelines(draw: st.DrawFn) -> list[Req]:
    count = draw(st.integers(1, 3))
    return [draw(requests(last=i == count - 1)) for i in range(count)]


# --- responses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resp:
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    framing: Framing
    keep_alive: bool
    wire: bytes


reasons = _bytes_of(VCHAR_OBS + b" \t", 0, 16).map(lambda r: r.strip(b" \t"))


@st.composite
def responses(draw: st.DrawFn, *, last: bool, head_request: bool) -> Resp:
    """A final response. UNTIL_CLOSE only as the last one; HEAD answers have no body."""
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 418, 500, 503, 599]))
    version = b"1.1" if not last else draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    kinds = [Framing.LENGTH, Framing.CHUNKED] + ([Framing.UNTIL_CLOSE] if last else [])
    declared = draw(st.sampled_from(kinds))
    if version == b"1.0" and declared is Framing.CHUNKED:
        declared = Framing.LENGTH
    no_body = head_request or status in (204, 304)
    body = b"" if no_body else draw(st.binary(max_size=40))
    headers = [(draw(header_names), draw(field_values())) for _ in range(draw(st.integers(0, 4)))]
    body_wire = body
    if status == 204:
        declared = Framing.NONE
    elif declared is Framing.LENGTH:
        size = draw(st.integers(0, 99)) if no_body else len(body)
        headers.append((b"Content-Length", b"%d" % size))
    elif declared is Framing.CHUNKED:
        headers.append((b"Transfer-Encoding", b"chunked"))
        body_wire = b"" if no_body else draw(chunked_bodies(body))
    connection: bytes | None = None
    if version == b"1.0":
        connection = draw(st.sampled_from([b"keep-alive", None]))
    elif last:
        connection = draw(st.sampled_from([None, b"keep-alive", b"close"]))
    if connection is not None:
        headers.append((b"Connection", connection))
    headers = draw(st.permutations(headers))
    ows = [draw(st.sampled_from([b" ", b"", b"\t"])) for _ in headers]
    reason = draw(reasons)
    wire = b"HTTP/%s %d %s\r\n" % (version, status, reason)
    wire += _field_lines(headers, ows) + b"\r\n" + body_wire
    framing = Framing.NONE if no_body else declared
    # llhttp does not know a HEAD answer has no body: without framing fields it reads to the
    # close, so the connection is not kept (the proxy never reuses it after HEAD anyway).
    keep_alive = (
        connection == b"keep-alive" if version == b"1.0" else connection != b"close"
    ) and (declared is not Framing.UNTIL_CLOSE or status == 304)
    return Resp(status, reason, tuple(headers), body, framing, keep_alive, wire)


@st.composite
def informational(draw: st.DrawFn) -> Resp:
    status = draw(st.sampled_from([100, 102, 103]))
    headers = [(draw(header_names), draw(field_values())) for _ in range(draw(st.integers(0, 2)))]
    reason = draw(reasons)
    wire = b"HTTP/1.1 %d %s\r\n" % (status, reason) + _field_lines(headers, [b" "] * len(headers))
    return Resp(status, reason, tuple(headers), b"", Framing.NONE, True, wire + b"\r\n")


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bool, list[Resp]]:
    """What one app connection sends: responses, each maybe after 1xx ones. A HEAD answer ends
    the parser's life, so it comes last."""
    head_request = draw(st.booleans())
    count = 1 if head_request else draw(st.integers(1, 3))
    out: list[Resp] = []
    for i in range(count):
        out += draw(st.lists(informational(), max_size=2))
        out.append(draw(responses(last=i == count - 1, head_request=head_request)))
    return head_request, out


# --- consuming ------------------------------------------------------------------------------------


def snapshot(event: object) -> object:
    """An event as the proxy pops it, comparable. Errors compare by class (the reason
    may name a different position); an Upgrade's trailing bytes depend on where input was cut."""
    if isinstance(event, ProtocolError):
        return ("ProtocolError", type(event.error))
    if isinstance(event, Upgrade):
        return ("Upgrade",)
    return event  # heads and data are not touched by the parser once handed out


def consume(parser: Parser, pieces: Iterable[bytes]) -> list[object]:
    """Feed piece by piece, popping everything queued after each feed (as the proxy does); Data
    events joined, since how a body is cut into events is not part of the contract."""
    out: list[object] = []
    for piece in pieces:
        parser.feed(piece)
        while parser.events:
            event = snapshot(parser.events.popleft())
            if isinstance(event, Data):
                if not event.data:
                    continue
                if out and isinstance(out[-1], Data):
                    out[-1] = Data(out[-1].data + event.data)
                    continue
            out.append(event)
    return out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def parse_requests(pieces: Iterable[bytes]) -> list[object]:
    return consume(RequestParser(), pieces)


def parse_responses(pieces: Iterable[bytes], head_request: bool) -> list[object]:
    parser = ResponseParser()
    parser.head_request = head_request
    return consume(parser, pieces)


def cut_points(size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, size), max_size=12)


# --- the consistency rules ------------------------------------------------------------------------


def rule(holds: bool, name: str, detail: object) -> None:
    """Assert one named rule; the name comes first so the sweep can group failures by rule."""
    if not holds:
        raise AssertionError(f"{name}: {detail!r}")


def _named(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def _check_fields(head: RequestHead | ResponseHead) -> None:
    """What the proxy writes back verbatim must not be able to start a new line or field."""
    for name, value in head.headers:
        rule(bool(name) and all(c in TCHAR for c in name), "field name not a token", head)
        rule(all(c in FIELD_BYTES for c in value), "field value holds a control byte", head)


def _check_framing(head: RequestHead | ResponseHead, *, response: bool) -> None:
    te = _named(head.headers, b"transfer-encoding")
    cl = _named(head.headers, b"content-length")
    rule(not (te and cl), "both Transfer-Encoding and Content-Length handed out", head)
    rule(len(cl) <= 1, "several Content-Length fields handed out", head)
    if te:
        rule(len(te) == 1, "several Transfer-Encoding fields handed out", head)
        rule(te[0].strip(b" \t").lower() == b"chunked", "a coding other than chunked", head)
    if cl:
        rule(cl[0].strip(b" \t").isdigit(), "Content-Length not 1*DIGIT", head)
        rule(head.content_length == int(cl[0]), "content_length differs from the field", head)
    else:
        rule(head.content_length is None, "content_length without the field", head)
    if head.framing is Framing.CHUNKED:
        rule(bool(te), "CHUNKED framing without Transfer-Encoding", head)
    elif head.framing is Framing.LENGTH:
        rule(bool(cl), "LENGTH framing without Content-Length", head)
    elif head.framing is Framing.UNTIL_CLOSE:
        rule(response and not te and not cl, "UNTIL_CLOSE with framing fields", head)
        rule(not head.keep_alive, "UNTIL_CLOSE but keep-alive", head)
    elif not response:
        rule(not te and not cl, "a request with framing fields but no body", head)


def check_request_head(head: RequestHead) -> None:
    rule(bool(head.method) and all(c in TCHAR for c in head.method), "method not a token", head)
    rule(head.target.startswith(b"/"), "target not origin-form", head)
    rule(len(head.target) <= MAX_TARGET, "target too long", head)
    rule(all(0x20 < c < 0x7F for c in head.target), "target not safe to write back", head)
    rule(head.version in (b"1.0", b"1.1"), "version not 1.0 or 1.1", head)
    _check_fields(head)
    hosts = _named(head.headers, b"host")
    rule(len(hosts) <= 1, "several Host fields", head)
    rule(head.host == (hosts[0] if hosts else None), "host differs from the field", head)
    rule(head.version == b"1.0" or bool(hosts), "HTTP/1.1 without Host", head)
    _check_framing(head, response=False)
    if head.upgrade:
        rule(head.framing is Framing.NONE, "an upgrade with a body", head)
        # headers.to_app names the protocol from this field: an upgrade without one (CONNECT
        # with an origin-form target) has nothing to forward.
        rule(bool(_named(head.headers, b"upgrade")), "an upgrade without an Upgrade field", head)
        # Past a 101 the client would speak HTTP/2 to the app around routing (h2c smuggling).
        rule(not offers_h2c(head.headers), "an upgrade that offers h2c", head)
    size = sum(len(n) + len(v) + 4 for n, v in head.headers)
    rule(size <= MAX_HEAD, "head over MAX_HEAD", head)


def check_response_head(head: ResponseHead, head_request: bool) -> None:
    # The proxy writes b" %d " % status: only 100-999 come out as the 3 digits HTTP needs.
    rule(100 <= head.status <= 999, "status not 3 digits from 100", head)
    rule(all(c in FIELD_BYTES for c in head.reason), "reason phrase holds a control byte", head)
    _check_fields(head)
    _check_framing(head, response=True)
    if head_request or head.status < 200 or head.status in (204, 304):
        rule(head.framing is Framing.NONE, "a body where the status allows none", head)


@dataclass
class Message:
    head: RequestHead | ResponseHead
    body: bytes
    complete: bool


def check_events(
    events: list[object], *, response: bool, head_request: bool = False
) -> list[Message]:
    """The rules every event sequence obeys; returns the messages it describes."""
    messages: list[Message] = []
    current: Message | None = None
    terminal: object = None
    for event in events:
        rule(terminal is None, "an event after the parser stopped", (terminal, events))
        if isinstance(event, tuple):
            terminal = event  # a ProtocolError (or an Upgrade): nothing may follow
            if event == ("Upgrade",):
                rule(current is None and bool(messages), "an upgrade inside a message", events)
                last = messages[-1].head
                upgrading = last.status == 101 if isinstance(last, ResponseHead) else last.upgrade
                rule(upgrading, "an upgrade after a head that did not ask for one", events)
        elif isinstance(event, RequestHead | ResponseHead):
            rule(current is None, "a head inside a message", events)
            rule(isinstance(event, ResponseHead) == response, "a head of the wrong kind", events)
            if isinstance(event, RequestHead):
                check_request_head(event)
            else:
                check_response_head(event, head_request)
            current = Message(event, b"", False)
            messages.append(current)
        elif isinstance(event, Data):
            rule(current is not None, "data before a head", events)
            assert current is not None
            framing = current.head.framing
            rule(framing is not Framing.NONE, "data for a head without a body", events)
            current.body += event.data
            if framing is Framing.LENGTH:
                size = current.head.content_length or 0
                rule(len(current.body) <= size, "more data than Content-Length", events)
        else:
            rule(isinstance(event, EndOfMessage), "an unknown event", events)
            rule(current is not None, "an end without a head", events)
            assert current is not None
            framing = current.head.framing
            rule(framing is not Framing.UNTIL_CLOSE, "an end of a close-delimited body", events)
            if framing is Framing.LENGTH:
                size = current.head.content_length
                rule(len(current.body) == size, "body size differs from Content-Length", events)
            current.complete = True
            current = None
            last = messages[-1].head
            if head_request and isinstance(last, ResponseHead) and last.status >= 200:
                terminal = "the end of a HEAD response"
    return messages


def forwarded(head: RequestHead, body: bytes) -> bytes:
    """The request as the proxy writes it: the head through `request_head` without hop-by-hop
    fields, a Host if there was none, and framing of its own."""
    fields = [(n, v) for n, v in head.headers if n.lower() not in HOP_BY_HOP]
    if head.host is None:
        fields.append((b"Host", b"127.0.0.1:8080"))
    if head.framing is Framing.CHUNKED:
        fields.append((b"Transfer-Encoding", b"chunked"))
        wire = (chunk_header(len(body)) + body + b"\r\n" if body else b"") + LAST_CHUNK
    elif head.framing is Framing.LENGTH:
        fields.append((b"Content-Length", b"%d" % len(body)))
        wire = body
    else:
        wire = b""
    return request_head(head.method, head.target, fields) + wire


def check_forwardable(messages: list[Message]) -> None:
    """Every complete request, written back as the proxy would, parses to the same request."""
    for message in messages:
        if not message.complete:
            continue
        head = message.head
        assert isinstance(head, RequestHead)
        if head.upgrade:
            continue  # upgrades are written with their own Connection/Upgrade pair
        again = parse_requests([forwarded(head, message.body)])
        ok = not any(isinstance(e, tuple) for e in again) and isinstance(again[-1], EndOfMessage)
        rule(ok, "the forwarded request does not parse", (head, again))
        reparsed = again[0]
        assert isinstance(reparsed, RequestHead)
        same = (reparsed.method, reparsed.target) == (head.method, head.target)
        rule(same, "the forwarded request line differs", (head, reparsed))
        body = b"".join(e.data for e in again if isinstance(e, Data))
        rule(body == message.body, "the forwarded body differs", (message.body, body))
        kept = [(n, v) for n, v in head.headers if n.lower() not in HOP_BY_HOP]
        rule(reparsed.headers[: len(kept)] == kept, "the forwarded fields differ", (head, reparsed))


# --- (a) valid input parses to what was built, however it is cut ---------------------------------


@PROPERTY
@given(reqs=pipelines(), data=st.data())
def test_valid_requests_parse_to_what_was_built_however_split(
    reqs: list[Req], data: st.DataObject
) -> None:
    wire = b"".join(r.wire for r in reqs)
    whole = parse_requests([wire])
    cuts = data.draw(cut_points(len(wire)), label="cuts")
    assert parse_requests(split(wire, cuts)) == whole
    messages = check_events(whole, response=False)
    assert all(m.complete for m in messages)
    assert len(messages) == len(reqs), whole
    for message, req in zip(messages, reqs, strict=True):
        head = message.head
        assert isinstance(head, RequestHead)
        assert (head.method, head.target, head.version) == (req.method, req.target, req.version)
        assert head.headers == list(req.headers)
        assert (head.framing, head.keep_alive) == (req.framing, req.keep_alive)
        assert head.expect_continue == req.expect_continue
        assert head.upgrade is False
        assert message.body == req.body
    check_forwardable(messages)


@PROPERTY
@given(reqs=pipelines())
def test_valid_requests_fed_byte_by_byte(reqs: list[Req]) -> None:
    wire = b"".join(r.wire for r in reqs)
    assert parse_requests([wire[i : i + 1] for i in range(len(wire))]) == parse_requests([wire])


@PROPERTY
@given(exchange=exchanges(), data=st.data())
def test_valid_responses_parse_to_what_was_built_however_split(
    exchange: tuple[bool, list[Resp]], data: st.DataObject
) -> None:
    head_request, resps = exchange
    wire = b"".join(r.wire for r in resps)
    whole = parse_responses([wire], head_request)
    cuts = data.draw(cut_points(len(wire)), label="cuts")
    assert parse_responses(split(wire, cuts), head_request) == whole
    messages = check_events(whole, response=True, head_request=head_request)
    assert len(messages) == len(resps), whole
    for message, resp in zip(messages, resps, strict=True):
        head = message.head
        assert isinstance(head, ResponseHead)
        assert (head.status, head.reason) == (resp.status, resp.reason)
        assert head.headers == list(resp.headers)
        assert (head.framing, head.keep_alive) == (resp.framing, resp.keep_alive), head
        assert message.body == resp.body
        # A close-delimited body ends only when the app closes: no end event for it.
        assert message.complete == (resp.framing is not Framing.UNTIL_CLOSE)


# --- (b), (c) single-byte mutations ---------------------------------------------------------------


def mutate(wire: bytes, kind: str, position: int, byte: int) -> bytes:
    if kind == "replace":
        position %= len(wire)
        return wire[:position] + bytes([byte]) + wire[position + 1 :]
    if kind == "insert":
        position %= len(wire) + 1
        return wire[:position] + bytes([byte]) + wire[position:]
    position %= len(wire)
    return wire[:position] + wire[position + 1 :]


mutations = st.tuples(
    st.sampled_from(["replace", "insert", "delete"]),
    st.integers(0, 10_000),
    st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255)),
)


def check_mutated_requests(wire: bytes, cuts: Iterable[int] = ()) -> None:
    whole = parse_requests([wire])  # never raises: an exception fails the test
    messages = check_events(whole, response=False)
    check_forwardable(messages)
    rule(parse_requests(split(wire, cuts)) == whole, "events depend on how input is cut", wire)


def check_mutated_responses(wire: bytes, head_request: bool, cuts: Iterable[int] = ()) -> None:
    whole = parse_responses([wire], head_request)
    check_events(whole, response=True, head_request=head_request)
    same = parse_responses(split(wire, cuts), head_request) == whole
    rule(same, "events depend on how input is cut", wire)


@MUTATION
@given(reqs=pipelines(), mutation=mutations, data=st.data())
def test_mutated_requests_are_refused_or_consistent(
    reqs: list[Req], mutation: tuple[str, int, int], data: st.DataObject
) -> None:
    wire = mutate(b"".join(r.wire for r in reqs), *mutation)
    check_mutated_requests(wire, data.draw(cut_points(len(wire)), label="cuts"))


@MUTATION
@given(exchange=exchanges(), mutation=mutations, data=st.data())
def test_mutated_responses_are_refused_or_consistent(
    exchange: tuple[bool, list[Resp]], mutation: tuple[str, int, int], data: st.DataObject
) -> None:
    head_request, resps = exchange
    wire = mutate(b"".join(r.wire for r in resps), *mutation)
    check_mutated_responses(wire, head_request, data.draw(cut_points(len(wire)), label="cuts"))


# --- the deterministic sweep: every position, every byte class ------------------------------------

REQUEST_PIPELINE = (
    b"GET /a/b?c=d HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n"
    b"POST /up HTTP/1.1\r\nhost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"
    b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n"
    b"DELETE /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
)
RESPONSE_PIPELINE = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n"
    b"HTTP/1.0 404 Not Found\r\n\r\ngone"
)
HEAD_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
UPGRADE_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz"
)
UPGRADE_RESPONSE = b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\nxyz"


def every_mutation(wire: bytes) -> Iterable[tuple[str, int, int]]:
    for position in range(len(wire) + 1):
        if position < len(wire):
            yield "delete", position, 0
        for byte in INTERESTING:
            if position < len(wire) and byte != wire[position]:
                yield "replace", position, byte
            yield "insert", position, byte


def sweep(wire: bytes, check: Callable[[bytes, list[int]], None]) -> list[str]:
    """Run `check` on every mutation; the distinct failures, one example each."""
    failures: dict[str, str] = {}
    for kind, position, byte in every_mutation(wire):
        mutated = mutate(wire, kind, position, byte)
        try:
            check(mutated, [position, position + 1])
        except Exception as exc:  # any exception is a failure to report, not to stop on
            key = f"{type(exc).__name__}: {str(exc).split(':')[0][:100]}"
            failures.setdefault(key, f"{kind} {byte:#04x} at {position}: {mutated!r}")
    return [f"{key}\n    {where}" for key, where in failures.items()]


def test_every_single_byte_mutation_of_a_request_pipeline() -> None:
    assert check_events(parse_requests([REQUEST_PIPELINE]), response=False)
    failures = sweep(REQUEST_PIPELINE, check_mutated_requests)
    assert not failures, "\n".join(failures)


def test_every_single_byte_mutation_of_an_upgrade_request() -> None:
    assert parse_requests([UPGRADE_REQUEST])[-1] == ("Upgrade",)
    failures = sweep(UPGRADE_REQUEST, check_mutated_requests)
    assert not failures, "\n".join(failures)


def test_every_single_byte_mutation_of_a_response_pipeline() -> None:
    assert check_events(parse_responses([RESPONSE_PIPELINE], False), response=True)
    failures = sweep(RESPONSE_PIPELINE, lambda w, c: check_mutated_responses(w, False, c))
    assert not failures, "\n".join(failures)


def test_every_single_byte_mutation_of_a_head_response() -> None:
    failures = sweep(HEAD_RESPONSE, lambda w, c: check_mutated_responses(w, True, c))
    assert not failures, "\n".join(failures)


def test_every_single_byte_mutation_of_a_101_response() -> None:
    assert parse_responses([UPGRADE_RESPONSE], False)[-1] == ("Upgrade",)
    failures = sweep(UPGRADE_RESPONSE, lambda w, c: check_mutated_responses(w, False, c))
    assert not failures, "\n".join(failures)


# --- what the sweeps and tests/test_smuggling.py found, as plain examples -----------------------


def test_connect_with_an_origin_form_target_is_refused() -> None:
    """CONNECT makes llhttp hand over as an upgrade, but with no Upgrade header the proxy has no
    protocol to name (headers.to_app raises StopIteration, which escapes the connection's task)."""
    events = parse_requests([b"CONNECT /a/x HTTP/1.1\r\nHost: localhost\r\n\r\n"])
    check_events(events, response=False)


def test_a_status_under_100_never_carries_a_body_the_head_denies() -> None:
    """`HTTP/1.1 099`: llhttp reads the body by its Content-Length, but the head said NONE, so
    the proxy writes the body after a head without framing (the client reads it as a response)."""
    events = parse_responses(
        [b"HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n"], False
    )
    check_events(events, response=True)


def test_a_reason_phrase_never_holds_control_bytes() -> None:
    """RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ). llhttp lets NUL and other
    controls through and the proxy writes the reason back verbatim; the same bytes in a field
    value get the response refused."""
    events = parse_responses([b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"], False)
    check_events(events, response=True)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.binary(max_size=24) | st.from_regex(rb"\A[0-9]{1,24}\Z"))
def test_a_content_length_reads_as_int_reads_it(value: bytes) -> None:
    """The parser reads Content-Length digits itself (int() on bytes costs ten times more):
    the same number for digits, the same ValueError for anything int() refuses."""
    try:
        expected: int | None = int(value)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match="invalid literal for int"):
            fields.content_length(value)
    else:
        assert fields.content_length(value) == expected


@pytest.mark.parametrize("value", [b"0", b"007", b"13", b"18446744073709551615", b" 5", b"+5"])
def test_a_content_length_value_in_a_head(value: bytes) -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n\r\n")
    head = parser.events[0]
    if isinstance(head, RequestHead):
        assert head.content_length == int(value)
    else:  # what llhttp refuses stays refused
        assert isinstance(head, ProtocolError), head
