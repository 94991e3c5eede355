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
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import build, compiled, control, heap, logsetup, reconfig
from .accesslog import AccessLog
from .children import make_private_dir
from .config import MAX_SOCKET_PATH, Config, Listen, Loader
from .engine import Engine
from .errors import ConfigError, SockgateError
from .managed import AppManager
from .proxy import ClientConnection
from .reconfig import ReloadResult
from .sockets import AcceptedSocket
from .stream import Stream, release_spares
from .watch import ConfigWatcher

log = logging.getLogger(__name__)

BACKLOG = 1024
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
        # How to read the config again on reload: the same file, the same overrides.
        self.loader = loader or Loader.of(config)
        self.label = label  # "worker 1234: " in a worker's log lines
        self._socks = socks
        self.engine = Engine(config, AccessLog(config.access_log), apps, worker=slot)
        self.connections: dict[ClientConnection, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.address: tuple[str, int] | None = None
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
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._listeners.append(Listener(sock, self._accepted, self._accept_failed))
        self.address = socks[0].getsockname()[:2]
        host, port = self.address
        # For HTTP/1.0 clients that send no Host: the address really bound (port 0 resolved).
        self.engine.default_host = str(Listen(host, port)).encode()
        monitor = self.engine.monitor
        monitor.process = dataclasses.replace(monitor.process, listen=str(Listen(host, port)))

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

    def _accepted(self, sock: socket.socket, peer: object) -> None:
        if self._rest is not None:  # not at rest: the wait starts again at the next last close
            self._rest.cancel()
            self._rest = None
        task = self._loop.create_task(self._serve(sock, peer))
        self._starting.add(task)

    async def _serve(self, sock: socket.socket, peer: object) -> None:
        # TCP_NODELAY comes with the socket: accepted sockets inherit it from the listening one.
        loop = self._loop
        task = asyncio.current_task(loop)
        assert task is not None
        try:
            try:
                _, stream = await loop.connect_accepted_socket(self._new_stream, sock)
            except OSError as exc:
                # The loop closes the socket with the transport it failed to set up.
                log.debug("accepted connection lost before it was served: %s", exc)
                return
            finally:
                self._starting.discard(task)
            conn = ClientConnection(stream, self.engine, peer)
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


def listen_on(
    host: str, port: int, *, reuse_port: bool = False, listen: bool = True
) -> list[socket.socket]:
    """Sockets bound to every address of `host`, as loop.create_server would make them. With
    `reuse_port` they may share the port with other processes (workers); `listen=False` only
    reserves the port (the kernel hands connections to listening members alone)."""
    socks: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if listen:
                sock.listen(BACKLOG)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Server], None] | None = None,
    socks: list[socket.socket] | None = None,
    worker: bool = False,
    loader: Loader | None = None,
    watch: bool = False,
    slot: int = 0,
) -> None:
    """Run until SIGINT or SIGTERM (or `POST /stop` on the control socket); a second signal
    skips the drain. SIGHUP (or `POST /reload`) reloads; with `watch`, so does a change to the
    config file.

    A `worker` (one of several processes, see supervisor) serves `socks` and leaves the pid file,
    the startup banner and the config watcher to its supervisor; worker `slot` 0 serves the
    control socket.
    """
    apps = None if worker else AppManager(config.supervised, config.logs_dir)
    label = f"worker {os.getpid()}: " if worker else ""
    server = Server(
        config, socks, apps=apps, loader=loader, label=label, slot=slot if worker else None
    )
    loop = asyncio.get_running_loop()
    force = asyncio.Event()

    def on_signal() -> None:
        (force if server.stopping.is_set() else server.stopping).set()

    def on_hup() -> None:
        if not server.stopping.is_set():
            server.reload()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not worker:
            stack.enter_context(PidFile(config.pid_file))
        if watch:
            stack.enter_context(watching(config))
        try:
            await _serve_until_stopped(
                server,
                config,
                force,
                stack,
                on_ready=on_ready,
                apps=apps,
                control=not worker or slot == 0,
            )
        finally:
            if apps is not None:
                await apps.stop(now=force.is_set())
    if not worker:
        log.info("stopped")


async def _serve_until_stopped(
    server: Server,
    config: Config,
    force: asyncio.Event,
    stack: contextlib.ExitStack,
    *,
    on_ready: Callable[[Server], None] | None,
    apps: AppManager | None,
    control: bool,
) -> None:
    worker = apps is None
    await server.start()
    if control:
        ctl = await start_control(config, server, worker=worker)
        if ctl is not None:
            stack.callback(ctl.close)  # last: `sockgate stop` returns once this closes
    if apps is not None:  # once the port is ours: a second sockgate here starts nothing
        prepare_discovery(config)
        await apps.start()
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


def prepare_discovery(config: Config) -> None:
    """The folder discovery watches exists (0700 when created here), so sockets can appear."""
    if config.sockets_dir is not None:
        try:
            make_private_dir(config.sockets_dir)
        except OSError as exc:
            log.warning("cannot create sockets_dir %s: %s", config.sockets_dir, exc.strerror)


async def start_control(
    config: Config, server: Server, *, worker: bool
) -> control.ControlServer | None:
    """The control socket in workdir. A worker's stop goes to its supervisor, which stops all
    workers. A workdir too deep for a Unix socket path runs without one, and says so."""
    path = config.control_socket
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        log.warning(
            "no control socket: %s is over the %d-byte limit for Unix socket paths; "
            "`sockgate status` and `sockgate stop` will not find this sockgate",
            path,
            MAX_SOCKET_PATH,
        )
        return None

    supervisor = os.getppid() if worker else None

    def to_supervisor(signum: int) -> bool:
        if supervisor is not None and os.getppid() == supervisor:  # never signal an adopter
            os.kill(supervisor, signum)
            return True
        return False

    def stop() -> None:
        log.info("stop asked on the control socket")
        if not to_supervisor(signal.SIGTERM):
            server.stopping.set()

    def reload() -> reconfig.ReloadResult:
        log.info("reload asked on the control socket")
        if worker:
            # The supervisor validates once and passes the reload on to every worker.
            sent = to_supervisor(signal.SIGHUP)
            return reconfig.ReloadResult(sent, "reload passed on to the supervisor", None)
        if server.stopping.is_set():
            return reconfig.ReloadResult(False, "stopping: no reload", None)
        return server.reload()

    actions = control.Actions(status=server.engine.monitor.snapshot, stop=stop, reload=reload)
    ctl = control.ControlServer(path, actions)
    await ctl.start()
    return ctl


def log_banner(config: Config, host: str, port: int) -> None:
    """The line tests and users wait for, then the routes."""
    shown = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d/ with %d apps", shown, port, len(config.apps))
    for app in config.apps:
        runs = ""
        if app.command is not None:
            runs = ", on demand" if app.command.on_demand else ", supervised"
        log.info("  %s -> %s (%s%s)", app.prefix, app.socket, app.name, runs)
    if config.sockets_dir is not None:
        log.info("  /NAME/ -> %s/NAME.sock (discovered)", config.sockets_dir)
    if config.engine == "builtin":
        slower = (
            "" if compiled() else " (half the speed of a compiled install: README, Performance)"
        )
        log.info("built-in engine: %s%s", build(), slower)


def run(
    config: Config,
    *,
    on_ready: Callable[[Server], None] | None = None,
    socks: list[socket.socket] | None = None,
    worker: bool = False,
    loader: Loader | None = None,
    watch: bool = False,
    slot: int = 0,
) -> int:
    """Run the engine in this process, on uvloop when it is installed."""
    heap.tune()
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(
            serve(
                config,
                on_ready=on_ready,
                socks=socks,
                worker=worker,
                loader=loader,
                watch=watch,
                slot=slot,
            )
        )
    return 0


def watching(config: Config) -> ConfigWatcher:
    """The watcher behind `run --watch`; refused when there is no file to watch."""
    if config.source is None:
        raise SockgateError("--watch needs a config file (apps given with --app only)")
    return ConfigWatcher(config.source)


class PidFile:
    """`sockgate.pid` in the working directory; refuses to start over a live sockgate."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        other = live_pid(self.path)
        if other is not None and other != os.getpid():
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


def live_pid(path: Path) -> int | None:
    """The pid in a pid file if that process is alive; None without a file or a live process."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) else None


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
