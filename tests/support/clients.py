"""Client-side helpers for the proxy tests: a raw TCP client that parses what the proxy sends
back with llhttp (httptools), and small building blocks for scripted raw-app handlers.

Everything waits on bytes, events or deadlines; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httptools

from tests.support.rawapp import Conn, Flood

DEADLINE = 10.0


# --- the client side ------------------------------------------------------------------------


def request_bytes(
    target: str | bytes,
    method: str = "GET",
    *,
    host: str | bytes = "127.0.0.1",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "1.1",
    content_length: bool | None = None,
) -> bytes:
    """One request as bytes. A Content-Length is added when there is a body (or when asked)."""
    raw_target = target if isinstance(target, bytes) else target.encode()
    raw_host = host if isinstance(host, bytes) else host.encode()
    lines = [method.encode() + b" " + raw_target + b" HTTP/" + version.encode()]
    if raw_host:
        lines.append(b"Host: " + raw_host)
    lines += [f"{name}: {value}".encode() for name, value in headers]
    if content_length or (content_length is None and body):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*parts: bytes) -> bytes:
    """A chunked body made of `parts`, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


@dataclass
class Response:
    """One response as the client saw it; filled in as bytes arrive. It occupies
    `wire[start:end]`, the connection's bytes from the end of the response before it to the byte
    llhttp completed it with (`end` is None while it is incomplete)."""

    status: int = 0
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    head_done: bool = False
    complete: bool = False
    wire: bytearray = field(default_factory=bytearray, repr=False)
    start: int = 0
    end: int | None = None

    @property
    def raw(self) -> bytes:
        """Exactly the bytes of this response: all that came for it so far while incomplete."""
        return bytes(self.wire[self.start : self.end])

    def header(self, name: str) -> bytes | None:
        found = self.header_all(name)
        return found[0] if found else None

    def header_all(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == key]

    def names(self) -> set[str]:
        return {n.decode("latin-1").lower() for n, _ in self.headers}


class _Completion:
    complete = False

    def on_message_complete(self) -> None:
        self.complete = True


def message_end(wire: bytearray, start: int, after: int) -> int:
    """Where the response that begins at `wire[start]` ends, given that it does not end before
    `after`. llhttp decides: a parser of its own gets the bytes up to `after` at once, then one
    byte at a time until it completes the message."""
    probe = _Completion()
    parser = httptools.HttpResponseParser(probe)
    at = max(start, after)
    parser.feed_data(wire[start:at])
    for end in range(at + 1, len(wire) + 1):
        try:
            parser.feed_data(wire[end - 1 : end])
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            pass  # an upgrade, or what follows the message: past its end either way
        if probe.complete:
            return end
    raise AssertionError(f"llhttp's probe never completes the response at {start} in {wire!r}")


class RawClient:
    """A TCP connection to the proxy. Responses are delimited by llhttp, never by hand: each
    `Response.raw` is exactly its bytes, and what arrives after a response stays for the next
    one or for `read_to_close`. After a 101 the bytes that follow are kept in `tunnel` untouched.
    A parser error is raised to the reader that needs the bytes past it."""

    def __init__(self, port: int, timeout: float = DEADLINE) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.responses: list[Response] = []
        self.tunnel = bytearray()
        self.upgraded = False
        self.eof = False
        self.received = bytearray()
        self.error: httptools.HttpParserError | None = None
        self._taken = 0  # responses handed out by head(), response() and read_response()
        self._placed = 0  # responses whose place in `received` is final
        self._boundary = 0  # where the next response begins: the end of the last complete one
        self._current: Response | None = None
        self._parser = httptools.HttpResponseParser(self)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send everything; False if the proxy had already closed (after a refusal it may reset
        the connection: tolerated, what was received tells the rest)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    # --- llhttp callbacks
    def on_message_begin(self) -> None:
        self._current = Response(wire=self.received)
        self.responses.append(self._current)

    def on_status(self, status: bytes) -> None:
        assert self._current is not None
        self._current.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._current is not None
        self._current.status = self._parser.get_status_code()
        self._current.head_done = True

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        assert self._current is not None
        self._current.complete = True

    # --- reading
    def _feed(self, data: bytes) -> None:
        begin = len(self.received)
        self.received += data
        if self.upgraded:
            self.tunnel += data
            return
        if self.error is not None:
            return  # llhttp stopped at the error; the bytes are still in `received`
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            self.tunnel += data[exc.args[0] :]
        except httptools.HttpParserError as exc:
            self.error = exc
        self._place(begin)

    def _place(self, begin: int) -> None:
        """Give the responses that the bytes from `begin` on completed their end in `received`;
        the one still open starts after them."""
        for response in self.responses[self._placed :]:
            response.start = self._boundary
            if not response.complete:
                return
            response.end = self._boundary = message_end(self.received, self._boundary, begin)
            self._placed += 1

    def _parse_error(self) -> httptools.HttpParserError:
        """The parser error again, with every byte the connection received."""
        return httptools.HttpParserError(f"{self.error}; received {bytes(self.received)!r}")

    def read_once(self) -> bool:
        """One recv into the parser; False at end of stream (a reset counts as the end). The
        caller looks at `responses` itself, so a parser error is raised at once."""
        more = self._recv()
        if self.error is not None:
            raise self._parse_error() from self.error
        return more

    def _recv(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._feed(data)
        return True

    def _read_until(self, predicate: Callable[[], bool]) -> bool:
        """Read until `predicate()` holds (True) or the stream ends (False); the socket timeout
        bounds each recv. A parser error in the way is raised."""
        while not predicate():
            if self.error is not None:
                raise self._parse_error() from self.error
            if not self._recv():
                return False
        return True

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Read until `predicate()` holds; AssertionError if the stream ends first."""
        if not self._read_until(predicate):
            raise AssertionError(
                f"connection closed before {what}; received {bytes(self.received)!r}"
            )

    def head(self) -> Response:
        """The next response whose head is complete (its body may still be arriving)."""
        index = self._taken
        self.wait(
            lambda: len(self.responses) > index and self.responses[index].head_done,
            f"response head #{index + 1}",
        )
        self._taken += 1
        return self.responses[index]

    def response(self) -> Response:
        """The next complete response."""
        response = self.head()
        self.wait(lambda: response.complete, f"the end of the {response.status} response")
        return response

    def read_response(self) -> Response:
        """The next response as far as the connection carried it: complete, cut short by the end
        of the stream (`complete` False), or empty (`raw == b""`) if the stream ended first."""
        index = self._taken
        self._read_until(lambda: len(self.responses) > index and self.responses[index].complete)
        if len(self.responses) <= index:
            return Response()
        self._taken += 1
        return self.responses[index]

    def body_until(self, response: Response, needle: bytes) -> None:
        self.wait(lambda: needle in response.body, f"{needle!r} in the body")

    def tunnel_until(self, needle: bytes) -> None:
        self.wait(lambda: needle in self.tunnel, f"{needle!r} through the tunnel")

    def read_to_close(self) -> bytes:
        """Read until the proxy closes (TimeoutError if it never does); returns what came after
        the last response taken, b"" while that one is incomplete. Once the stream has ended, a
        parser error is raised."""
        while self._recv():
            pass
        if self.error is not None:
            raise self._parse_error() from self.error
        last = self.responses[self._taken - 1] if self._taken else None
        after = 0 if last is None else len(self.received) if last.end is None else last.end
        return bytes(self.received[after:])

    def closed_by_peer(self) -> bool:
        """True when the proxy has closed: the next recv sees the end within the timeout."""
        self.read_to_close()
        return self.eof


def exchange(port: int, request: bytes) -> tuple[Response, bytes]:
    """Send bytes on a new connection; the first response, and when it says `Connection: close`
    (or is cut short) everything after it until the proxy closes (a proxy that does not close
    times out)."""
    with RawClient(port) as client:
        client.send(request)
        response = client.read_response()
        closing = response.header("Connection") == b"close" or not response.complete
        rest = client.read_to_close() if closing else b""
        return response, rest


# --- the app side ---------------------------------------------------------------------------


async def read_head(conn: Conn) -> tuple[bytes, bytes]:
    """Read a request head from the raw connection (recording the bytes); returns the head
    (without the blank line) and whatever followed it in the same reads."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = await conn.reader.read(65536)
        if not data:
            raise ConnectionResetError("the proxy closed before a whole head")
        conn.received += data
        conn.app.record(data)
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    return head, rest


async def read_exactly(conn: Conn, already: bytes, size: int) -> bytes:
    """`size` bytes of body, `already` included, recording what is read."""
    buf = bytearray(already)
    while len(buf) < size:
        data = await conn.reader.read(65536)
        if not data:
            raise ConnectionResetError("the proxy closed in the middle of the body")
        conn.received += data
        conn.app.record(data)
        buf += data
    return bytes(buf)


def head_header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


async def wait_gate(gate: threading.Event, seconds: float = DEADLINE) -> bool:
    """Wait in an app handler for a threading.Event set by the test; False if it never was."""
    return await asyncio.get_running_loop().run_in_executor(None, gate.wait, seconds)


def vm_kib(pid: int, key: str) -> int:
    """A memory figure of a process from /proc/<pid>/status, in KiB (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


class RequestWatcher:
    """What an app receives, fed to llhttp as it arrives: head, decoded body so far, end."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.head_done = False
        self.complete = False
        self._parser = httptools.HttpRequestParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: bytes) -> bytes | None:
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[0] if found else None

    async def read_until(self, conn: Conn, predicate: Callable[[RequestWatcher], bool]) -> bool:
        """Read from the app connection (recording bytes) until `predicate(self)`; False if
        the proxy closed first."""
        while not predicate(self):
            data = await conn.reader.read(65536)
            if not data:
                return False
            conn.received += data
            conn.app.record(data)
            self._parser.feed_data(data)
        return True


def slow_reader_holds_the_app_back(
    port: int, pid: int, flood: Flood, request: bytes, body: bytearray | None = None
) -> bytes:
    """Send `request` from a client with a small receive buffer that reads the response head
    and then nothing: the proxy (process `pid`) must stop taking the app's bytes well before the
    end, its peak memory flat; then everything arrives (into `body`, if given). Returns the
    head."""
    before = vm_kib(pid, "VmHWM")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    with sock:
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(4096)
            assert data, "closed before the head"
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        assert flood.stalled.wait(30), "the app was never held back"
        assert not flood.finished.is_set()
        assert flood.sent_at_stall < flood.total // 2
        grown = vm_kib(pid, "VmHWM") - before
        assert grown < 32 * 1024, f"the proxy grew by {grown} KiB"
        count = len(rest)
        if body is not None:
            body += rest
        while count < flood.total:
            data = sock.recv(1 << 20)
            assert data, f"closed after {count} bytes"
            count += len(data)
            if body is not None:
                body += data
    assert count == flood.total
    assert flood.finished.wait(DEADLINE)
    return head
