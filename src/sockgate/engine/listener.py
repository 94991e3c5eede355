"""Accepting connections ourselves, so a failed accept() is seen, logged and retried."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ..proc.listen import BACKLOG
from .sockets import AcceptedSocket

# accept() failing (out of file descriptors, mostly) pauses accepting: the connections that wait
# stay in the listen queue until a connection closes or this many seconds pass, instead of being
# accepted and dropped at once, which is what uvloop's own server does, silently.
ACCEPT_RETRY = 1.0


# Seconds between two warnings about it; the pauses in between are logged at debug level.
WARN_EVERY = 60.0


class Listener:
    """Accepts connections on one listening socket and hands them to `on_accept`. When accept()
    fails (out of file descriptors, say) it stops watching the socket, so it cannot spin, and
    tells `on_pause`; `resume()` (a connection closed) or a timer starts it again."""

    def __init__(
        self,
        sock: socket.socket,
        on_accept: Callable[[socket.socket, object], None],
        on_pause: Callable[[OSError], None],
    ) -> None:
        self.sock = sock
        self._on_accept = on_accept
        self._on_pause = on_pause
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._family = sock.family
        self.paused = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        # Until the queue is empty, though the EAGAIN that ends each batch costs an exception:
        # one connection per readiness (nginx's default) measured slower here, each connection
        # then paying a loop iteration more (new connections per second -9 %).
        for _ in range(BACKLOG):
            try:
                # What socket.accept() does, with the family known (see AcceptedSocket).
                fd, peer = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                self._pause(exc)
                return
            self._on_accept(AcceptedSocket(self._family, fd), peer)

    def _pause(self, exc: OSError) -> None:
        self.paused = True
        self._loop.remove_reader(self.sock.fileno())
        self._retry = self._loop.call_later(ACCEPT_RETRY, self.resume)
        self._on_pause(exc)

    def resume(self) -> None:
        if not self.paused or self.sock.fileno() < 0:
            return
        self.paused = False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if not self.paused and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self.paused = True
        self.sock.close()
