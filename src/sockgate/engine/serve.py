"""The built-in engine as a process: serve until a signal, reload on SIGHUP, stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable

from ..apps.discovery import prepare_discovery
from ..apps.managed import AppManager
from ..buildinfo import build, compiled
from ..config import MAX_SOCKET_PATH, Config, Listen, Loader, reconfig
from ..proc import systemd
from ..proc.pidfile import PidFile
from ..proc.watch import watching
from ..status import control
from ..tls import contexts
from . import heap
from .server import Server

log = logging.getLogger(__name__)


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
            systemd_reload(server)

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
        log_banner(config, host, port, server.tls_address[1] if server.tls_address else None)
        systemd.ready(str(Listen(host, port)))
    if on_ready is not None:
        on_ready(server)
    await server.stopping.wait()
    if not worker:
        log.info("stopping: finishing requests under way (up to %gs)", config.timeouts.shutdown)
        systemd.stopping()
    drain = asyncio.ensure_future(server.shutdown(config.timeouts.shutdown))
    forced = asyncio.ensure_future(force.wait())
    await asyncio.wait([drain, forced], return_when=asyncio.FIRST_COMPLETED)
    if not drain.done():
        log.info("second signal: stopping now")
        await server.shutdown(0)
    forced.cancel()
    await asyncio.gather(drain, forced, return_exceptions=True)


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
        return systemd_reload(server)

    actions = control.Actions(status=server.engine.monitor.snapshot, stop=stop, reload=reload)
    ctl = control.ControlServer(path, actions)
    await ctl.start()
    return ctl


def systemd_reload(server: Server) -> reconfig.ReloadResult:
    """`Server.reload` in the main process, which tells systemd (RELOADING=1, then READY=1)."""
    systemd.reloading()
    try:
        return server.reload()
    finally:
        systemd.reloaded(server.engine.monitor.process.listen)


def log_banner(config: Config, host: str, port: int, tls_port: int | None = None) -> None:
    """The line tests and users wait for, then the routes."""
    shown = f"[{host}]" if ":" in host else host
    count = len(config.apps)
    log.info(
        "listening on http://%s:%d/ with %d app%s", shown, port, count, "" if count == 1 else "s"
    )
    for app in config.apps:
        log.info("  %s", config.route_line(app, port))
    if config.sockets_dir is not None:
        also = f", also http://NAME.localhost:{port}/" if config.host_routes else ""
        log.info("  /NAME/ -> %s/NAME.sock (discovered)%s", config.sockets_dir, also)
    if config.tls is not None:
        log.info("  %s", contexts.banner(config.tls, tls_port or config.tls.listen.port))
    if config.engine == "builtin":
        slower = (
            "" if compiled() else " (half the speed of a compiled install: docs/performance.md)"
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
