"""The live side of the status page: each app's socket probed while someone looks, the status
document built from the probes and the counters, and the event stream that pushes it.

Probing costs a connect per app (no request: the apps see nothing in their logs), so it only
runs while the page's event stream is open (once a second, shared by every viewer) or when
`status.json`/`sockgate status` asks (at most every FRESH seconds).

The apps sockgate runs are read from the engine's `AppManager` as each document is built: a plain
snapshot of each `ManagedApp` (state, pid, starts, last exit, time to the next start). With
workers the apps run in the apps process, which this process does not see ("elsewhere").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..apps.managed import AppManager, AppState, ManagedApp
from ..config import Config
from ..http.events import Headers
from ..http.serialise import response_head
from . import dashboard, probe
from .dashboard import ELSEWHERE, AppProcess, Live, Process
from .stats import Stats

log = logging.getLogger(__name__)

PUSH_EVERY = 1.0  # seconds between two events on the stream (each after a fresh probe)
FRESH = 0.5  # probes younger than this answer status.json without probing again
PROBE_TIMEOUT = 1.0  # a probe's connect, at most (the config's connect timeout if shorter)
UNKNOWN = Live("unknown", "not probed yet")


class EventSink(Protocol):
    """Where the event stream goes: an HTTP/1.1 connection's stream, or an HTTP/2 stream."""

    on_eof: Callable[[], None] | None  # set while serving: called when the client leaves

    def write(self, data: bytes) -> None: ...

    async def drain(self, deadline: float) -> None:
        """Until the client has taken what was written; TimeoutError, ConnectionError."""


class Monitor:
    """`config` is the one in force (a reload may replace it); `process` says who answers;
    `apps` runs the supervised apps in this process (None: another process runs them)."""

    def __init__(
        self, config: Config, stats: Stats, process: Process, apps: AppManager | None = None
    ) -> None:
        self.config = config
        self.stats = stats
        self.process = process
        self.port = config.listen.port  # the one listened on, once bound (`listen` may say 0)
        self.tls_port: int | None = None  # the same for `[tls]`
        self.apps = apps
        self._live: dict[str, Live] = {}
        self._checked = float("-inf")  # loop time of the last probe
        self._probing: asyncio.Task[None] | None = None
        self._watchers = 0
        self._ticker: asyncio.Task[None] | None = None
        self._tick: asyncio.Future[None] | None = None  # resolved at each push
        self._doc: dict[str, Any] | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<Monitor apps={len(self.config.apps)} watchers={self._watchers}>"

    def document(self) -> dict[str, Any]:
        """The status document from the last probes (they may be old) and current counts."""
        apps = [
            (app, self._live.get(app.name, UNKNOWN), self.stats.app(app.name).snapshot())
            for app in self.config.apps
        ]
        config = self.config
        urls = {app.name: config.urls(app, self.port, self.tls_port) for app in config.apps}
        return dashboard.document(self.process, apps, time.time(), self.runs(), urls)

    def runs(self) -> dict[str, AppProcess]:
        """The process of each app with a `command`, by name, as its supervisor sees it now."""
        now = time.monotonic()
        found: dict[str, AppProcess] = {}
        for app in self.config.apps:
            if app.command is None:
                continue
            managed = None if self.apps is None else self.apps.apps.get(app.name)
            if managed is None:
                found[app.name] = AppProcess(ELSEWHERE, on_demand=app.command.on_demand)
            else:
                found[app.name] = app_process(managed, now)
        return found

    async def snapshot(self) -> dict[str, Any]:
        """The status document with probes at most FRESH seconds old."""
        if self._loop.time() - self._checked > FRESH:
            await self._probe()
        return self.document()

    async def _probe(self) -> None:
        if self._probing is None or self._probing.done():
            self._probing = self._loop.create_task(self._probe_all())
        await asyncio.shield(self._probing)

    async def _probe_all(self) -> None:
        apps = self.config.apps
        timeout = min(self.config.timeouts.connect, PROBE_TIMEOUT)
        found = await asyncio.gather(*(probe.reach(app, timeout) for app in apps))
        self._live = {app.name: Live(*result) for app, result in zip(apps, found, strict=True)}
        self._checked = self._loop.time()

    # --- the event stream
    async def serve_events(self, stream: EventSink, head: bytes, send_timeout: float) -> int:
        """Write `head`, then the status document as one event now and one a second, until the
        client leaves or the connection is closed (shutdown aborts it). Returns the body bytes
        sent."""
        gone: asyncio.Future[None] = self._loop.create_future()

        def on_gone() -> None:
            if not gone.done():
                gone.set_result(None)

        stream.on_eof = on_gone
        self._watch(1)
        sent = 0
        try:
            first = asyncio.ensure_future(self.snapshot())
            either: list[asyncio.Future[Any]] = [first, gone]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                first.cancel()
                return 0
            doc = first.result()
            while True:
                data = dashboard.event(doc)
                stream.write(head + data if head else data)
                head = b""
                sent += len(data)
                await stream.drain(self._loop.time() + send_timeout)
                if self._tick is None:
                    self._tick = self._loop.create_future()
                await asyncio.wait([self._tick, gone], return_when=asyncio.FIRST_COMPLETED)
                if gone.done() or self._doc is None:
                    return sent
                doc = self._doc
        except (ConnectionError, TimeoutError) as exc:
            log.debug("status event stream ended: %s", exc)
            return sent
        finally:
            stream.on_eof = None
            self._watch(-1)

    def _watch(self, change: int) -> None:
        self._watchers += change
        if self._watchers and (self._ticker is None or self._ticker.done()):
            self._ticker = self._loop.create_task(self._run_ticker())
        elif not self._watchers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _run_ticker(self) -> None:
        """While anyone watches: probe, build the document, wake every stream; once a second."""
        while True:
            await asyncio.sleep(PUSH_EVERY)
            await self._probe()
            self._doc = self.document()
            tick, self._tick = self._tick, None
            if tick is not None:
                tick.set_result(None)

    def close(self) -> None:
        for task in (self._ticker, self._probing):
            if task is not None:
                task.cancel()
        self._ticker = self._probing = None


def app_process(managed: ManagedApp, now: float) -> AppProcess:
    """What the status shows of one supervised app; `now` is monotonic, as its retry time.
    An on-demand app is not restarted on a timer (the next request starts it): no wait shown."""
    retry = managed.retry_at
    wait = None
    if retry is not None and managed.state is AppState.BACKOFF and not managed.command.on_demand:
        wait = retry - now
    return AppProcess(
        state=managed.state.name.lower(),
        pid=managed.pid,
        starts=managed.starts,
        last_exit=managed.last_exit or None,
        next_start_in=wait,
        on_demand=managed.command.on_demand,
    )


def reply(status: int, content_type: bytes, body: bytes, *, close: bool) -> bytes:
    """The head of one of the status page's own responses (never cached, never framed)."""
    headers = reply_headers(content_type, body)
    if close:
        headers.append((b"Connection", b"close"))
    return response_head(status, _REASONS.get(status, b"OK"), headers)


def reply_headers(content_type: bytes, body: bytes) -> Headers:
    """The headers of one of the status page's own responses, for any protocol."""
    headers: Headers = [
        (b"Content-Type", content_type),
        (b"Content-Length", b"%d" % len(body)),
        (b"Cache-Control", b"no-store"),
        (b"X-Content-Type-Options", b"nosniff"),
    ]
    if content_type.startswith(b"text/html"):
        headers += [
            (b"Content-Security-Policy", dashboard.CSP.encode()),
            (b"X-Frame-Options", b"DENY"),
            (b"Referrer-Policy", b"no-referrer"),
        ]
    return headers


def events_head() -> bytes:
    """The head of the event stream: delimited by the connection's close."""
    return response_head(200, b"OK", [*events_headers(), (b"Connection", b"close")])


def events_headers() -> Headers:
    """The event stream's headers, for any protocol."""
    return [
        (b"Content-Type", b"text/event-stream; charset=utf-8"),
        (b"Cache-Control", b"no-store"),
        (b"X-Content-Type-Options", b"nosniff"),
    ]


_REASONS = {200: b"OK", 202: b"Accepted"}


async def page_or_json(monitor: Monitor, path: bytes) -> tuple[bytes, bytes] | None:
    """The content type and body for a path under the status page's prefix; None for none."""
    if path == b"/":
        doc = await monitor.snapshot()
        return b"text/html; charset=utf-8", dashboard.page(doc, monitor.process.dashboard or "/")
    if path == b"/status.json":
        doc = await monitor.snapshot()
        return b"application/json", dashboard.dumps(doc)
    return None
