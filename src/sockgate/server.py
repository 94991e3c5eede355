"""The built-in engine's process: listen, track connections, stop cleanly on a signal.

Shutdown runs in a fixed order: stop accepting, close idle connections and tunnels, let requests
under way finish until the deadline, cancel what is left, remove the pid file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from .accesslog import AccessLog
from .config import Config, Listen
from .errors import SockgateError
from .proxy import ClientConnection, Engine
from .stream import Stream

log = logging.getLogger(__name__)


class Server:
    def __init__(self, config: Config, sock: socket.socket | None = None) -> None:
        self.config = config
        self._sock = sock
        self.engine = Engine(config, AccessLog(config.access_log))
        self.connections: dict[ClientConnection, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<Server {self.address} connections={len(self.connections)}>"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self.config.listen
        try:
            if self._sock is not None:
                self._server = await loop.create_server(
                    lambda: Stream(self._accepted), sock=self._sock, backlog=1024
                )
            else:
                self._server = await loop.create_server(
                    lambda: Stream(self._accepted),
                    host=listen.host,
                    port=listen.port,
                    reuse_address=True,
                    backlog=1024,
                )
        except OSError as exc:
            raise SockgateError(bind_error(str(listen), exc)) from None
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address = sock.getsockname()[:2]
        host, port = self.address
        # For HTTP/1.0 clients that send no Host: the address really bound (port 0 resolved).
        self.engine.default_host = str(Listen(host, port)).encode()

    def _accepted(self, stream: Stream) -> None:
        conn = ClientConnection(stream, self.engine)
        if stream.transport is not None:
            with contextlib.suppress(OSError):
                stream.transport.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
        task = asyncio.get_running_loop().create_task(conn.run())
        self.connections[conn] = task
        task.add_done_callback(lambda _: self.connections.pop(conn, None))

    async def shutdown(self, deadline: float) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        tasks = list(self.connections.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d connections cut at the shutdown deadline", len(pending))
                await asyncio.wait(pending)
        self.engine.close()
        self.engine.access_log.close()


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Server], None] | None = None,
    sock: socket.socket | None = None,
    worker: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM; a second signal skips the drain.

    A `worker` (one of several processes, see supervisor) serves `sock` and leaves the pid file
    and the startup banner to its supervisor.
    """
    server = Server(config, sock)
    loop = asyncio.get_running_loop()
    force = asyncio.Event()

    def on_signal() -> None:
        (force if server.stopping.is_set() else server.stopping).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if worker else PidFile(config.pid_file):
        await server.start()
        if not worker:
            host, port = server.address or ("?", 0)
            log_banner(config, host, port)
        if on_ready is not None:
            on_ready(server)
        await server.stopping.wait()
        if not worker:
            log.info("stopping: finishing requests under way (up to %gs)", config.timeouts.shutdown)
        drain = asyncio.ensure_future(server.shutdown(config.timeouts.shutdown))
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait([drain, forced], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.info("second signal: stopping now")
            await server.shutdown(0)
        forced.cancel()
        await asyncio.gather(drain, forced, return_exceptions=True)
    if not worker:
        log.info("stopped")


def log_banner(config: Config, host: str, port: int) -> None:
    """The line tests and users wait for, then the routes."""
    shown = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d/ with %d apps", shown, port, len(config.apps))
    for app in config.apps:
        log.info("  %s -> %s (%s)", app.prefix, app.socket, app.name)


def run(
    config: Config,
    *,
    on_ready: Callable[[Server], None] | None = None,
    sock: socket.socket | None = None,
    worker: bool = False,
) -> int:
    """Run the engine in this process, on uvloop when it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(config, on_ready=on_ready, sock=sock, worker=worker))
    return 0


class PidFile:
    """`sockgate.pid` in the working directory; refuses to start over a live sockgate."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        try:
            other = int(self.path.read_text().strip())
        except (OSError, ValueError):
            other = 0
        if other and other != os.getpid() and _alive(other):
            raise SockgateError(
                f"{self.path}: sockgate already runs here as pid {other}; stop it first "
                "or use another workdir"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bind_error(listen: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {listen}: address already in use (another server runs there; "
            "change `listen` or pass --listen)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {listen}: permission denied (ports below 1024 need root)"
    return f"cannot listen on {listen}: {exc.strerror or exc}"
