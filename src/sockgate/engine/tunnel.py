"""Bytes both ways after an upgrade, untouched, with half-close, until both sides are done.

The bytes move in the streams' callbacks (`Stream.on_data`): a WebSocket message costs no task
wake-up. Backpressure: while one side is slow to read, the other is not read from.
"""

from __future__ import annotations

import asyncio
import functools

from .deadline import Deadline
from .stream import Stream


async def splice(client: Stream, app: Stream, idle_timeout: float) -> None:
    """Relay until both directions reach end of stream; raise TimeoutError after idle_timeout
    without a byte either way. A reset on either side ends both (the caller closes them)."""
    tunnel = _Tunnel(client, app, idle_timeout)
    try:
        await tunnel.done
    finally:
        tunnel.detach()


class _Tunnel:
    def __init__(self, a: Stream, b: Stream, idle_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._streams = (a, b)
        self._idle = idle_timeout
        self._ended = 0  # directions that reached end of stream
        self._idle_deadline = Deadline(self._loop, self._timed_out)
        self._idle_deadline.set(self._loop.time() + idle_timeout)
        for src, dst in ((a, b), (b, a)):
            self._start(src, dst)

    def _start(self, src: Stream, dst: Stream) -> None:
        # What arrived before the upgrade was through (or was handed back) goes first.
        while src.has_buffered and not self.done.done():
            self._data(src, dst, src.take())
        if self.done.done():
            return
        if src.peer_closed:  # its end of stream came before the tunnel: on_eof has fired
            self._end(src, dst)
            return
        src.on_data = functools.partial(self._data, src, dst)
        src.on_eof = functools.partial(self._end, src, dst)
        dst.on_drained = functools.partial(src.hold, False)

    def _data(self, src: Stream, dst: Stream, data: bytes) -> None:
        self._idle_deadline.set(self._loop.time() + self._idle)
        try:
            dst.write(data)
        except ConnectionError:
            self._reset()
            return
        if dst.writing_paused:
            src.hold(True)

    def _end(self, src: Stream, dst: Stream) -> None:
        """`src` sent its end of stream, or went away."""
        if src.reset:
            self._reset()
            return
        dst.write_eof()  # the other direction may still have bytes to carry
        self._ended += 1
        # TLS has no half-close: past this end the client would wait for a close that never
        # comes (a WebSocket client waits out its close timeout), so the tunnel ends here.
        if self._ended == 2 or not dst.can_write_eof():
            self._finish(None)

    def _reset(self) -> None:
        # A reset ends the tunnel both ways.
        for stream in self._streams:
            stream.abort()
        self._finish(None)

    def _timed_out(self) -> None:
        self._finish(TimeoutError())

    def _finish(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def detach(self) -> None:
        self._idle_deadline.close()
        for stream in self._streams:
            stream.on_data = None
            stream.on_eof = None
            stream.on_drained = None
            stream.hold(False)
