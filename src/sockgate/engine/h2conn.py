"""An HTTP/2 client connection (ALPN h2 on the TLS listener): h2's sans-IO state machine fed
from the connection's stream; each request stream is an Exchange, through the same seam as
HTTP/1.1 (routing, Host policy, header policy, hold, rewriting, statistics, the access log and
pages are the same code), served by a task of its own. Apps are still spoken to in HTTP/1.1.

Limits against the known attacks close the abusive connection alone, with GOAWAY and the reason
logged: h2 itself bounds concurrent streams (100), the header list (64 KiB, HPACK bombs
included) and CONTINUATION runs; `Budget` bounds resets (CVE-2023-44487), pings, settings and
empty DATA frames (CVE-2019-9518).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from .. import errors
from ..exchange.forward import Exchange, decide
from ..http import h2heads
from ..http.events import END, Data, Headers
from .h2stream import H2Stream
from .shared import Engine
from .sockets import client_ip
from .stream import Stream

log = logging.getLogger(__name__)

MAX_STREAMS: Final = 100
MAX_HEADER_LIST: Final = 64 * 1024
# Per stream, what a client may send before the exchange takes it; the connection's window is
# large enough for every stream to use its own.
STREAM_WINDOW: Final = 256 * 1024
CONNECTION_WINDOW: Final = MAX_STREAMS * STREAM_WINDOW
# Frames a client may send beyond what serving needs, as a budget that refills per second:
# cancels (a browser cancels a few when a page moves on), pings and settings.
RESETS: Final = (200, 20.0)
PINGS: Final = (50, 10.0)
SETTINGS: Final = (50, 10.0)
# DATA frames that carry nothing and end nothing (CVE-2019-9518's flood).
EMPTY: Final = (100, 10.0)


class Budget:
    """So many at once, refilled at `rate` a second: spent out means abuse."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, rate: float) -> None:
        self._loop = loop
        self._size = self._left = float(size)
        self._rate = rate
        self._at = loop.time()

    def spend(self) -> bool:
        now = self._loop.time()
        self._left = min(self._size, self._left + (now - self._at) * self._rate)
        self._at = now
        self._left -= 1
        return self._left >= 0


class H2Client:
    def __init__(self, stream: Stream, engine: Engine, peer: object = None) -> None:
        self.stream = stream
        self.engine = engine
        self.loop = stream.loop
        self.timeouts = engine.config.timeouts
        self.client_ip = client_ip(stream.peer() if peer is None else peer)
        # What goes out is sockgate's own making (h2heads: lower-case names, no connection
        # headers), so h2 need not check it again; what comes in is checked.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config)
        self.streams: dict[int, H2Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_due = False
        self.closing = False
        self._abuse = {
            "resets": Budget(self.loop, *RESETS),
            "pings": Budget(self.loop, *PINGS),
            "settings": Budget(self.loop, *SETTINGS),
            "empty": Budget(self.loop, *EMPTY),
        }

    def __repr__(self) -> str:
        return f"<H2Client {self.client_ip} streams={len(self.streams)} closing={self.closing}>"

    # --- the connection's life
    async def run(self) -> None:
        h2conn = self.h2
        # In force from the start, and in the preface's SETTINGS (update_settings would queue
        # a second SETTINGS frame, which initiate_connection's defaults then overtake).
        h2conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # WebSockets (RFC 8441)
            },
        )
        h2conn.initiate_connection()
        h2conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._send()
        # What a finally would do, after the try: the compiled build awaits in no finally
        # (hatch_build.py).
        error: BaseException | None = None
        try:
            await self._read_until_closed()
        except OSError as exc:
            log.debug("client %s gone: %s", self.client_ip, exc)
        except BaseException as exc:  # cancelled (the shutdown deadline): re-raised below
            error = exc
        await self._close()
        if error is not None:
            raise error

    async def _read_until_closed(self) -> None:
        while not self.closing or self.streams:
            idle = not self.streams
            deadline = self.loop.time() + self.timeouts.keepalive if idle else None
            try:
                data = await self.stream.read(deadline)
            except TimeoutError:
                self.goaway(ErrorCodes.NO_ERROR, "idle")
                return
            if not data or not self._receive(data):
                return

    def _receive(self, data: bytes) -> bool:
        """Feed what arrived to h2 and act on its events; False when the connection ends."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the matching error code.
            log.warning("HTTP/2 client %s: %s; connection closed", self.client_ip, exc)
            self._send()
            return False
        for event in events:
            if not self._on(event):
                self._send()
                return False
        self._send()
        return True

    def _on(self, event: h2.events.Event) -> bool:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            empty = not event.data and event.stream_ended is None
            if empty and not self._abuse["empty"].spend():
                return self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many empty DATA frames")
            found = self.streams.get(event.stream_id)
            if found is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                padding = event.flow_controlled_length - len(event.data or b"")
                if padding:
                    self.h2.acknowledge_received_data(padding, event.stream_id)
                if event.data:  # an empty DATA frame (END_STREAM alone) is no body piece
                    found.received(Data(event.data))
        elif isinstance(event, h2.events.StreamEnded):
            found = self.streams.get(event.stream_id)
            if found is not None:
                found.received(END)
        elif isinstance(event, h2.events.StreamReset):
            found = self.streams.get(event.stream_id)
            if found is not None:
                found.client_reset()
            if event.remote_reset and not self._abuse["resets"].spend():
                return self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset")
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            settings = isinstance(event, h2.events.RemoteSettingsChanged)
            if settings and not self._abuse["settings"].spend():
                return self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many settings frames")
            for found in self.streams.values():
                found.wake()
        elif isinstance(event, h2.events.PingReceived):
            if not self._abuse["pings"].spend():
                return self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many pings")
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        ended = event.stream_ended is not None
        if self.closing:
            self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        try:
            key = base64.b64encode(os.urandom(16))
            head = h2heads.request_head(list(event.headers or ()), ended=ended, websocket_key=key)
        except errors.BadRequest as exc:
            log.info("HTTP/2 client %s: stream %d refused: %s", self.client_ip, stream_id, exc)
            self.reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        side = H2Stream(self, stream_id, ended=ended, tunnel=head.upgrade)
        self.streams[stream_id] = side
        ex = Exchange(head, decide(self.engine, head), side, self.engine)
        task = self.loop.create_task(self._serve(side, ex))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, side: H2Stream, ex: Exchange) -> None:
        try:
            await ex.run()
        except (OSError, errors.ClientGone) as exc:
            log.debug("client %s stream %d gone: %s", self.client_ip, side.id, exc)
        except errors.SockgateError as exc:
            log.warning("client %s: exchange ended: %s", self.client_ip, exc)
        finally:
            self.streams.pop(side.id, None)
            if not side.reset and not (side.done and side.client_ended):
                # Cut short; or answered before the client was through: it may stop sending.
                self.reset(side.id, ErrorCodes.NO_ERROR if side.done else ErrorCodes.INTERNAL_ERROR)
            self._send()
            if self.closing and not self.streams:
                self._close_stream()  # the read in run() sees the end

    async def _close(self) -> None:
        """The connection is gone (or cut at the shutdown deadline): its streams' exchanges
        end now, each logged as its client left."""
        for side in list(self.streams.values()):
            side.client_reset()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_stream()

    # --- what the server asks of it (as of an HTTP/1.1 connection)
    def reconfigured(self) -> None:
        """A reload: GOAWAY, so the client opens its next streams on a new connection (of the
        new config from the start), while the streams under way finish on this one."""
        self.timeouts = self.engine.config.timeouts
        if not self.closing:
            self.goaway(ErrorCodes.NO_ERROR, None)
            if not self.streams:
                self._close_stream()

    def shutdown(self) -> None:
        """Stop after the streams under way: GOAWAY now, close when the last one ends."""
        if not self.closing:
            self.goaway(ErrorCodes.NO_ERROR, None)
        for side in list(self.streams.values()):
            if side.endless:  # the status page's feed: the browser reconnects elsewhere
                self.reset(side.id, ErrorCodes.CANCEL)
                side.client_reset()
        if not self.streams:
            self._close_stream()

    def goaway(self, code: ErrorCodes, reason: str | None) -> bool:
        """Tell the client no new stream is taken (the last one taken is said); False."""
        self.closing = True
        if code == ErrorCodes.NO_ERROR:
            # Written by hand: h2's close_connection would end the streams still under way too.
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.h2.highest_inbound_stream_id
            frame.error_code = code
            self._send_now()  # h2's frames before this one
            if not self.stream.closed:
                self.stream.write(frame.serialize())
            return False
        log.warning("HTTP/2 client %s: %s; connection closed", self.client_ip, reason)
        try:
            self.h2.close_connection(code, None if reason is None else reason.encode())
        except h2.exceptions.ProtocolError:
            pass  # already closed
        self._close_stream()
        return False

    # --- what streams ask of it
    def window(self, stream_id: int) -> int:
        try:
            window = self.h2.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return 0
        return min(window, self.h2.max_outbound_frame_size)

    def send_headers(self, stream_id: int, fields: Headers, *, end: bool) -> None:
        """errors.ClientGone when the stream or the connection has ended."""
        try:
            self.h2.send_headers(stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:  # StreamClosedError too
            raise errors.ClientGone(f"HTTP/2 stream {stream_id} ended: {exc}") from None
        self._send()

    def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """errors.ClientGone when the stream or the connection has ended."""
        try:
            self.h2.send_data(stream_id, data, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise errors.ClientGone(f"HTTP/2 stream {stream_id} ended: {exc}") from None
        self._send()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return  # the stream, or the whole connection, has ended already
        self._send()

    def consumed(self, stream_id: int, size: int) -> None:
        """The exchange took `size` bytes of a stream's body: the client may send that much
        more (stream and connection windows)."""
        if size:
            self.h2.acknowledge_received_data(size, stream_id)  # a closed stream: the connection's
            self._send()

    async def drain(self, deadline: float) -> None:
        try:
            await self.stream.drain(deadline)
        except TimeoutError:
            raise errors.ClientGone("client stopped reading the response") from None

    def _send(self) -> None:
        """What h2 has to send goes out once this turn of the loop is through: the frames of
        every stream answered in it leave in one TLS write, not one each."""
        if not self._send_due:
            self._send_due = True
            self.loop.call_soon(self._send_now)

    def _send_now(self) -> None:
        self._send_due = False
        data = self.h2.data_to_send()
        if data and not self.stream.closed:
            self.stream.write(data)

    def _close_stream(self) -> None:
        """Close the connection after what h2 has to send (GOAWAY, a last frame)."""
        self._send_now()
        self.stream.close()
