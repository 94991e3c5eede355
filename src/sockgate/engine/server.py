"""The built-in engine's process: listen, track connections, stop cleanly on a signal.

Connections are accepted here rather than by the loop's own server, so that running out of file
descriptors pauses accepting and says so in the log (uvloop accepts and drops, silently).

Shutdown runs in a fixed order: stop accepting, close idle connections and tunnels, let requests
under way finish until the deadline, cancel what is left, remove the pid file.

SIGHUP (also `sockgate reload`, and `run --watch` on an edit) reloads: `Server.reload` reads the
config again, refuses it whole if it is invalid or changes what only a restart can, and otherwise
swaps it into the engine between two requests; nothing open is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import gc
import logging
import resource
import socket
import sys
import time
from collections.abc import Callable

from ..apps.managed import AppManager
from ..config import Config, Listen, Loader, reconfig
from ..config.model import Tls
from ..config.reconfig import ReloadResult
from ..errors import ConfigError, SockgateError
from ..proc import logsetup
from ..proc.listen import bind_error, listen_on
from ..tls.contexts import ServerCerts
from . import heap
from .accesslog import AccessLog
from .client import ClientConnection
from .h2conn import H2Client
from .listener import ACCEPT_RETRY, WARN_EVERY, Listener
from .shared import Engine
from .stream import Stream, release_spares

log = logging.getLogger(__name__)


# How long without a connection before memory is handed back (at most this often, then).
AT_REST_AFTER = 1.0


class Server:
    def __init__(
        self,
        config: Config,
        socks: list[socket.socket] | None = None,
        apps: AppManager | None = None,
        *,
        loader: Loader | None = None,
        label: str = "",
        slot: int | None = None,
    ) -> None:
        self.config = config
        self._slot = slot
        # How to read the config again on reload: the same file, the same overrides.
        self.loader = loader or Loader.of(config)
        self.label = label  # "worker 1234: " in a worker's log lines
        self._socks = socks
        self.engine = Engine(config, AccessLog(config.access_log), apps, worker=slot)
        self.connections: dict[ClientConnection | H2Client, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self.certs: ServerCerts | None = None
        self._listeners: list[Listener] = []
        self._starting: set[asyncio.Task[None]] = set()  # accepted, transport not made yet
        self._warned_at = -WARN_EVERY
        self._rest: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._new_stream = functools.partial(Stream, loop=self._loop)

    def __repr__(self) -> str:
        return f"<Server {self.address} connections={len(self.connections)}>"

    async def start(self) -> None:
        listen = self.config.listen
        try:
            socks = self._socks or listen_on(listen.host, listen.port)
        except OSError as exc:
            raise SockgateError(bind_error(str(listen), exc)) from None
        self._accept_on(socks, self._accepted)
        self.address = socks[0].getsockname()[:2]
        host, port = self.address
        # For HTTP/1.0 clients that send no Host: the address really bound (port 0 resolved).
        self.engine.default_host = str(Listen(host, port)).encode()
        monitor = self.engine.monitor
        monitor.process = dataclasses.replace(monitor.process, listen=str(Listen(host, port)))
        monitor.port = port
        if self.config.tls is not None:
            self._start_tls(self.config.tls)

    def _start_tls(self, tls: Tls) -> None:
        """The HTTPS listener: its certificates first, so a CA that cannot be used stops the
        start before anything listens there."""
        self.certs = ServerCerts(tls, tls.listen.host)
        try:
            # Workers each bind it (the kernel spreads connections over them).
            socks = listen_on(tls.listen.host, tls.listen.port, reuse_port=self._slot is not None)
        except OSError as exc:
            raise SockgateError(bind_error(str(tls.listen), exc, key="tls.listen")) from None
        self._accept_on(socks, functools.partial(self._accepted, tls=True))
        self.tls_address = socks[0].getsockname()[:2]
        self.engine.monitor.tls_port = self.tls_address[1]

    def _accept_on(
        self, socks: list[socket.socket], accepted: Callable[[socket.socket, object], None]
    ) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._listeners.append(Listener(sock, accepted, self._accept_failed))

    def reload(self) -> ReloadResult:
        """Read the config again and serve it from the next request of every connection.

        Invalid, or changing what only a restart can (listen, workdir, engine, workers): refused
        whole, the running config stays, the error (file and key) is logged. Otherwise apps
        whose socket stays keep their pools and open streams; removed apps and moved sockets
        take no new request and what is under way on them is cut after `timeouts.shutdown`.
        """
        try:
            new = self.loader.load()
            reconfig.check_fixed(self.config, new)
        except ConfigError as exc:
            result = reconfig.refused(exc)
            log.error("%s%s", self.label, result.message)
            return result
        changes = reconfig.compare(self.config, new)
        retired = self.engine.reconfigure(new)
        self.config = new
        for conn in self.connections:
            conn.reconfigured()
        self.engine.drain(retired, new.timeouts.shutdown)
        try:
            self.engine.access_log.reopen()
            logsetup.reopen()
        except OSError as exc:
            log.warning("%scannot reopen the logs: %s", self.label, exc)
        result = reconfig.applied(changes)
        log.info("%s%s", self.label, result.message)
        return result

    def _accepted(self, sock: socket.socket, peer: object, *, tls: bool = False) -> None:
        if self._rest is not None:  # not at rest: the wait starts again at the next last close
            self._rest.cancel()
            self._rest = None
        task = self._loop.create_task(self._serve(sock, peer, tls))
        self._starting.add(task)

    async def _serve(self, sock: socket.socket, peer: object, tls: bool) -> None:
        # TCP_NODELAY comes with the socket: accepted sockets inherit it from the listening one.
        loop = self._loop
        task = asyncio.current_task(loop)
        assert task is not None
        try:
            try:
                if tls:
                    stream = await self._handshake(sock)
                else:
                    _, stream = await loop.connect_accepted_socket(self._new_stream, sock)
            except OSError as exc:  # ssl.SSLError too: a failed handshake
                # The loop closes the socket with the transport it failed to set up.
                log.debug("accepted connection lost before it was served: %s", exc)
                return
            finally:
                self._starting.discard(task)
            conn: ClientConnection | H2Client
            if tls and _alpn(stream) == "h2":
                conn = H2Client(stream, self.engine, peer)
            else:
                conn = ClientConnection(
                    stream, self.engine, peer, scheme=b"https" if tls else b"http"
                )
            self.connections[conn] = task
            try:
                await conn.run()
            finally:
                self.connections.pop(conn, None)
                if not self.connections and self._rest is None:
                    self._rest = loop.call_later(AT_REST_AFTER, self._at_rest)
        finally:
            for listener in self._listeners:
                listener.resume()  # a descriptor was freed

    async def _handshake(self, sock: socket.socket) -> Stream:
        assert self.certs is not None
        # uvloop returns its TLS protocol, not ours: the stream is the one made here.
        stream = self._new_stream()
        await self._loop.connect_accepted_socket(
            lambda: stream,
            sock,
            ssl=self.certs.context,
            ssl_handshake_timeout=self.config.timeouts.client_header,
        )
        return stream

    def _at_rest(self) -> None:
        """No connection for a while: give back what the last load left behind, which would
        otherwise stay at its peak: the apps' idle pooled connections, whatever cycles the
        collector has not reached yet, and the freed heap blocks that heap.tune keeps for the
        next load."""
        self._rest = None
        if self.connections or self._starting:
            return
        self.engine.close_idle()
        release_spares()
        # After the loop has run the closed connections' connection_lost (scheduled by now).
        self._loop.call_soon(self._hand_back)

    def _hand_back(self) -> None:
        found = gc.collect()
        heap.trim()
        # The allocated blocks at rest are the figure that shows a leak (tests/test_heap.py).
        log.debug(
            "%sat rest: %d objects collected, %d blocks allocated, free heap returned",
            self.label,
            found,
            sys.getallocatedblocks(),
        )

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno == errno.EMFILE:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            what = f"out of file descriptors (RLIMIT_NOFILE {soft})"
        elif exc.errno == errno.ENFILE:
            what = "the system is out of file descriptors"
        elif exc.errno in (errno.ENOBUFS, errno.ENOMEM):
            what = "out of kernel memory"
        else:
            what = "accept() failed"
        now = time.monotonic()
        level = logging.WARNING if now - self._warned_at >= WARN_EVERY else logging.DEBUG
        if level == logging.WARNING:
            self._warned_at = now
        log.log(
            level,
            "cannot accept connections: %s: %s, with %d connections open; accepting paused "
            "until one closes (checked again every %gs)",
            what,
            exc.strerror or exc,
            len(self.connections),
            ACCEPT_RETRY,
        )

    async def shutdown(self, deadline: float) -> None:
        for listener in self._listeners:
            listener.close()
        for starting in self._starting:
            starting.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        tasks = [*self.connections.values(), *self._starting]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d connections cut at the shutdown deadline", len(pending))
                await asyncio.wait(pending)
        if self._rest is not None:
            self._rest.cancel()
        self.engine.close()
        self.engine.access_log.close()


def _alpn(stream: Stream) -> str | None:
    """The protocol the TLS handshake settled on (ALPN), if any."""
    transport = stream.transport
    sslobj = None if transport is None else transport.get_extra_info("ssl_object")
    return None if sslobj is None else sslobj.selected_alpn_protocol()
