"""A raw HTTP/2 client over TLS for tests that must send what a well-behaved client never
would (floods, resets, shut windows) and see each frame the server sends back."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame

from tests.support.clients import DEADLINE


class H2TestClient:
    def __init__(
        self,
        port: int,
        cafile: Path,
        *,
        host: str = "localhost",
        settings: dict[int, int] | None = None,
    ) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.host = host
        self.port = port
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events: list[h2.events.Event] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(
        self, path: str, *, method: str = "GET", extra: list[tuple[str, str]] | None = None
    ) -> list[tuple[str, str]]:
        """A request's header block: the pseudo-headers, then `extra`."""
        return [
            (":method", method),
            (":scheme", "https"),
            (":authority", f"{self.host}:{self.port}"),
            (":path", path),
            *(extra or []),
        ]

    def websocket(self, path: str) -> int:
        """Open a WebSocket over HTTP/2 (RFC 8441 extended CONNECT); its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        extra = [("sec-websocket-version", "13")]
        headers = self.headers(path, method="CONNECT", extra=extra)
        headers.insert(1, (":protocol", "websocket"))
        self.conn.send_headers(stream_id, headers)
        self.flush()
        return stream_id

    def request(self, path: str, *, method: str = "GET", end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, self.headers(path, method=method), end_stream=end)
        self.flush()
        return stream_id

    def read_until(
        self, done: Callable[[list[h2.events.Event]], bool], deadline: float = DEADLINE
    ) -> list[h2.events.Event]:
        """Events until `done(all events so far)` or the server closes; AssertionError past
        `deadline`."""
        end = time.monotonic() + deadline
        while not done(self.events) and not self.closed:
            left = end - time.monotonic()
            assert left > 0, f"no end in {deadline}s: {self.events[-5:]}"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            self.events += self.conn.receive_data(data)
            self.flush()
        return self.events

    def body(self, stream_id: int) -> bytes:
        return b"".join(
            e.data or b""
            for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
        )

    def ended(self, stream_id: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
            and e.stream_id == stream_id
            for e in self.events
        )

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def read_frames_until(
        self, done: Callable[[list[Frame]], bool], deadline: float = DEADLINE
    ) -> list[Frame]:
        """Frames as they come, parsed by hyperframe alone: h2's own state machine refuses
        whatever follows a GOAWAY, which a graceful one lets the server still send."""
        end = time.monotonic() + deadline
        frames: list[Frame] = []
        buffer = b""
        while not done(frames):
            left = end - time.monotonic()
            assert left > 0, f"no end in {deadline}s: {frames[-5:]}"
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                break
            buffer += data
            while len(buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9 : 9 + length]))
                buffer = buffer[9 + length :]
                frames.append(frame)
        return frames

    def close(self) -> None:
        self.sock.close()


SETTINGS = h2.settings.SettingCodes
