"""A raw TCP client for the proxy: exact bytes out, exact bytes in. Responses are delimited with
httptools (llhttp), so a test sees precisely where one ends and whether it was complete."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import httptools

TIMEOUT = 10.0


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool  # the parser saw the end of the message
    raw: bytes  # every byte received for this response

    def header(self, name: bytes) -> bytes | None:
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[0] if found else None


@dataclass
class _ResponseState:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    headers_done: bool = False
    complete: bool = False


class RawClient:
    """One TCP connection to the proxy. Use as a context manager so the socket is closed."""

    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._pending = b""  # bytes received past the end of the last response

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send everything; a proxy that already refused and closed may reset: tolerated."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def recv_some(self) -> bytes:
        """The next bytes, b"" at end of stream (a reset counts as the end)."""
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def recv_until_close(self) -> bytes:
        """Everything until the proxy closes; raises TimeoutError if it never does."""
        data = bytearray(self._pending)
        self._pending = b""
        while chunk := self.recv_some():
            data += chunk
        return bytes(data)

    def read_response(self) -> Response:
        """One response, delimited by its framing; bytes past its end stay for the next call.
        `complete` is False when the connection closed before the end of the message."""
        state = _ResponseState()

        class Callbacks:
            def on_header(self, name: bytes, value: bytes) -> None:
                state.headers.append((name, value))

            def on_headers_complete(self) -> None:
                state.headers_done = True

            def on_body(self, body: bytes) -> None:
                state.body += body

            def on_message_complete(self) -> None:
                state.complete = True

        parser = httptools.HttpResponseParser(Callbacks())
        raw = bytearray()
        data, self._pending = self._pending, b""
        while not state.complete:
            if not data:
                data = self.recv_some()
                if not data:
                    break
            # One byte at a time: the byte that completes the message is known exactly, so
            # what follows it is never mistaken for part of this response.
            for i in range(len(data)):
                raw.append(data[i])
                parser.feed_data(data[i : i + 1])
                if state.complete:
                    self._pending = data[i + 1 :]
                    break
            data = b""
        status = parser.get_status_code() if state.headers_done else 0
        return Response(status, state.headers, bytes(state.body), state.complete, bytes(raw))


def exchange(port: int, request: bytes) -> tuple[Response, bytes]:
    """Send bytes on a new connection; the first response, and when it says `Connection: close`
    everything after it until the proxy closes (a proxy that does not close times out)."""
    with RawClient(port) as client:
        client.send(request)
        response = client.read_response()
        closing = response.header(b"Connection") == b"close" or not response.complete
        rest = client.recv_until_close() if closing else b""
        return response, rest
