"""`sockgate check`'s look at each app: can its socket be reached, and what does GET / answer."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from .. import errors
from ..apps.discovery import Discovery
from ..config import App, Config, Listen
from ..engine.upstream import AppConnection, Upstream
from ..errors import SockgateError
from ..http import nothttp
from ..http.events import ProtocolError, ResponseHead
from ..http.serialise import request_head
from ..proc import systemd_units
from ..proc.listen import bind_error, listen_on
from ..proc.pidfile import live_pid


@dataclass(frozen=True, slots=True)
class AppReport:
    app: App
    state: str  # "ok", or the fault's short name: missing, stale, permission denied, ...
    detail: str = ""
    status: int | None = None
    discovered: bool = False

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def down(self) -> bool:
        """Not answering, and not an app that `run` starts itself."""
        return not self.ok and self.app.command is None

    @property
    def kind(self) -> str:
        if self.discovered:
            return "discovered"
        if self.app.command is None:
            return ""
        return "on demand" if self.app.command.on_demand else "supervised"


async def probe_app(app: App, timeout: float) -> AppReport:  # noqa: ASYNC109 - also connect's
    upstream = Upstream(app, timeout)
    try:
        conn = AppConnection(await upstream.connect(hold=False))  # a report, not a request
    except errors.UpstreamError as exc:
        return AppReport(app, exc.state, exc.detail)
    try:
        conn.stream.write(
            request_head(
                b"GET",
                b"/",
                [
                    (b"Host", b"localhost"),
                    (b"User-Agent", b"sockgate-check"),
                    (b"Connection", b"close"),
                ],
            )
        )
        async with asyncio.timeout(timeout):
            while True:
                event = await conn.next_event()
                if event is None:
                    return AppReport(app, "error", errors.AppClosedEarly.fault)
                if isinstance(event, ProtocolError):
                    fault = errors.AppBadResponse.fault
                    detail = nothttp.detail(event.reason, event.first)
                    return AppReport(app, "error", f"{fault} ({detail})")
                if isinstance(event, ResponseHead) and not event.informational:
                    return AppReport(app, "ok", status=event.status)
    except TimeoutError:
        return AppReport(app, "timeout", f"no answer to GET / within {timeout:g}s")
    except ConnectionError:
        # Not the errno's words: the fault as a request through sockgate would name it.
        return AppReport(app, "error", errors.AppClosedEarly.fault)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class ListenReport:
    ok: bool  # `sockgate run` could listen there (or a sockgate of this workdir already does)
    text: str


def probe_listen(
    config: Config, running_at: str | None = None, *, tls: bool = False
) -> ListenReport:
    """Whether `sockgate run` could listen on the config's address (`tls`: its HTTPS one): it
    is free, taken by another program, or a sockgate of this workdir already runs (a reload is
    what is wanted). `running_at`: where that sockgate says it listens (its status), when it
    could be asked."""
    address = config.tls.listen if tls and config.tls is not None else config.listen
    label = "https" if tls else "listen"
    where = str(address)
    taken: OSError | None = None
    if address.port != 0:
        try:
            socks = listen_on(address.host, address.port, listen=False)
        except OSError as exc:
            taken = exc
        else:
            for sock in socks:
                sock.close()
    running = live_pid(config.pid_file)
    if running is not None:
        if taken is not None and running_at not in (None, where) and not tls:
            return ListenReport(
                False,
                f"{bind_error(where, taken)}; a sockgate of this workdir already runs (pid "
                f"{running}) on {running_at}",
            )
        there = "and listens on it" if taken is not None else "(not on this address)"
        return ListenReport(
            True,
            f"{label} {where}: a sockgate of this workdir already runs (pid {running}) {there}: "
            "`sockgate reload` applies this config to it, `sockgate stop` stops it",
        )
    if taken is not None:
        unit = None if tls else activating_unit(config.listen)
        if unit is not None:
            return ListenReport(
                True,
                f"listen {where}: held by systemd's {unit} (socket activation), which starts "
                "sockgate on the first connection",
            )
        return ListenReport(False, bind_error(where, taken, key=f"{'tls.' if tls else ''}listen"))
    if address.port == 0:
        return ListenReport(True, f"{label} {where}: a free port is picked at start")
    return ListenReport(True, f"{label} {where}: free")


def activating_unit(listen: Listen) -> str | None:
    """The socket unit of `sockgate service install --socket` that holds `listen`, if any."""
    try:
        line = f"ListenStream={systemd_units.stream_address(listen)}"
    except SockgateError:
        return None  # an address no socket unit of `install --socket` can have
    folder = systemd_units.unit_dir(os.environ, Path.home())
    for path in sorted(folder.glob(f"{systemd_units.PREFIX}*.socket")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        if line in lines:
            return path.name
    return None


async def probe_all(config: Config) -> list[AppReport]:
    """The configured apps, then the ones discovered in sockets_dir right now."""
    timeout = config.timeouts.connect
    found = discovered(config)
    reports = await asyncio.gather(*(probe_app(app, timeout) for app in (*config.apps, *found)))
    return [
        AppReport(r.app, r.state, r.detail, r.status, discovered=True) if r.app in found else r
        for r in reports
    ]


def discovered(config: Config) -> list[App]:
    if config.sockets_dir is None:
        return []
    return Discovery(config.sockets_dir, config.apps).scan()


async def reach(app: App, timeout: float) -> tuple[str, str]:  # noqa: ASYNC109 - connect's
    """Whether the app's socket takes a connection now: ("up", "") or the fault's short name
    and reason. Nothing is sent, so the app sees no request (the status page asks every
    second)."""
    try:
        stream = await Upstream(app, timeout).connect(hold=False)  # a look, not a request
    except errors.UpstreamError as exc:
        return exc.state, exc.detail
    stream.abort()
    return "up", ""
