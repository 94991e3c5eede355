"""`sockgate lint` end to end: pick the apps, check their sockets, fetch through the running
sockgate of this config, or through a temporary built-in engine when none runs, and collect
what escapes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ..config import App, Config, Listen
from ..engine.server import Server
from ..engine.stream import Stream
from ..errors import SockgateError
from ..proc.pidfile import live_pid
from ..status import probe
from . import MAX_PAGES
from .crawl import crawl
from .find import Scope
from .report import AppResult, Report, Via

# How long the listen address of a running sockgate may take to accept a connection.
ANSWER_TIMEOUT = 2.0


class UnknownApp(SockgateError):
    """The app named on the command line is not in the config."""


async def lint(config: Config, name: str | None = None, max_pages: int = MAX_PAGES) -> Report:
    apps = select(config, name)
    states = await asyncio.gather(*(probe.probe_app(a, config.timeouts.connect) for a in apps))
    down = {s.app.name: _down(s) for s in states if not s.ok}
    reachable = [app for app in apps if app.name not in down]
    results: dict[str, AppResult] = {
        app.name: AppResult(app, start="", error=down[app.name]) for app in apps if app.name in down
    }
    via = None
    if reachable:
        async with engine(config) as via:
            port = config.listen.port or via.port
            origin = f"http://{config.listen.public_host}:{port}"
            for app in reachable:
                scope = Scope(
                    app,
                    config.apps,
                    port=port,
                    listen_host=config.listen.host,
                    allowed_hosts=config.allowed_hosts,
                )
                address = (via.host, via.port)
                result = await crawl(scope, address, origin + app.prefix, max_pages)
                own = config.host_url(app, port)
                results[app.name] = dataclasses.replace(result, host_url=own)
    return Report(via, tuple(results[app.name] for app in apps))


def select(config: Config, name: str | None) -> list[App]:
    if name is None:
        if not config.apps:
            raise UnknownApp("no apps configured: nothing to lint")
        return list(config.apps)
    for app in config.apps:
        if app.name == name:
            return [app]
    known = ", ".join(app.name for app in config.apps) or "none"
    raise UnknownApp(f"no app named {name!r} in the config (apps: {known})")


def _down(state: probe.AppReport) -> str:
    socket = state.app.socket
    return f"{socket}: {state.state}" + (f" ({state.detail})" if state.detail else "")


@contextlib.asynccontextmanager
async def engine(config: Config) -> AsyncIterator[Via]:
    """The running sockgate of this config if there is one, else a temporary built-in engine on
    a free loopback port (in a scratch workdir: no pid file, no log lines of its own)."""
    running = await find_running(config)
    if running is not None:
        yield running
        return
    with tempfile.TemporaryDirectory(prefix="sockgate-lint-") as scratch:
        temporary = dataclasses.replace(
            config,
            listen=Listen("127.0.0.1", 0),
            workdir=Path(scratch),
            # The Host header names the configured address, which the engine must answer.
            allowed_hosts=(*config.allowed_hosts, config.listen.public_host),
        )
        temporary.logs_dir.mkdir()
        server = Server(temporary)
        await server.start()
        try:
            host, port = server.address or ("127.0.0.1", 0)
            yield Via("temporary", host, port)
        finally:
            await server.shutdown(0)


async def find_running(config: Config) -> Via | None:
    """The sockgate of this config: a live pid in its workdir and an answer on `listen`. A
    listen port of 0 cannot be found again, so then there is none."""
    pid = live_pid(config.pid_file)
    if pid is None or config.listen.port == 0:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.listen.host, config.listen.host)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            _, stream = await loop.create_connection(Stream, host, config.listen.port)
    except (OSError, TimeoutError):
        return None
    stream.abort()
    return Via("running", host, config.listen.port, pid)
