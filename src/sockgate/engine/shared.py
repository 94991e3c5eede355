"""What every client connection shares: the config, the routes, the app pools, the logs and the
status counters; and how a reload swaps them between two requests."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from .. import __version__
from ..apps.discovery import Discovery
from ..apps.managed import AppManager
from ..config import App, Config
from ..http import routing
from ..http.hosts import HostPolicy
from ..status import monitor
from ..status.dashboard import Process
from ..status.stats import Stats
from .accesslog import AccessLog
from .upstream import Upstream

log = logging.getLogger(__name__)


class Engine:
    """What every connection shares: config, routes, app pools, logs, the status counters.

    Connections read `config`, `router`, `upstreams` and `hosts` here for each request, so a
    reload (`reconfigure`) that replaces them between two requests is seen by the next request
    of every connection, kept-alive ones included. `worker` is this process's slot when it is one
    of several workers (the counters are then this worker's own, and the status says so)."""

    def __init__(
        self,
        config: Config,
        access_log: AccessLog | None = None,
        apps: AppManager | None = None,
        *,
        worker: int | None = None,
    ) -> None:
        self.config = config
        self.router = _router(config)
        self.upstreams = _pools(config, {})
        # The apps this process runs; a worker's are run by its supervisor.
        self.apps = apps or AppManager((), config.logs_dir)
        self.access_log = access_log or AccessLog(None)
        self.default_host = str(config.listen).encode()
        self.hosts = _host_policy(config)
        self._drains: set[asyncio.TimerHandle] = set()
        # The status page's counters (one O(1) update per exchange, in `_log`) and its prober.
        self.stats = Stats([app.name for app in config.apps])
        process = Process(
            version=__version__,
            pid=os.getpid(),
            listen=str(config.listen),
            started=time.time(),
            dashboard=config.dashboard,
            workers=config.workers,
            worker=worker,
        )
        self.monitor = monitor.Monitor(config, self.stats, process, apps)

    def __repr__(self) -> str:
        return f"<Engine apps={sorted(self.upstreams)} draining={len(self._drains)}>"

    def reconfigure(self, config: Config) -> list[Upstream]:
        """Serve `config` from the next request on; returns the pools it retires.

        An app whose name and socket stay keeps its pool (warm connections survive) and the
        exchanges under way on it. A removed app, or one whose socket moved, is retired: its
        idle connections close now, those under way go on until `drain()` cuts them.
        The attributes are swapped with no await in between: a request sees one config whole.
        """
        kept = self.upstreams
        upstreams = _pools(config, kept)
        retired = [up for name, up in kept.items() if upstreams.get(name) is not up]
        self.config = config
        self.router = _router(config)
        self.monitor.config = config
        self.upstreams = upstreams
        self.hosts = _host_policy(config)
        for upstream in retired:
            upstream.retire()
        return retired

    def drain(self, retired: list[Upstream], deadline: float) -> None:
        """Cut what is still under way on `retired` pools after `deadline` seconds."""
        busy = [upstream for upstream in retired if upstream.active]
        if not busy:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def cut() -> None:
            self._drains.discard(handle)
            for upstream in busy:
                count = upstream.cut()
                if count:
                    log.info(
                        "%s: %d connections cut at the drain deadline (%gs) after a reload",
                        upstream.app.name,
                        count,
                        deadline,
                    )

        handle = loop.call_later(deadline, cut)
        self._drains.add(handle)

    def upstream(self, app: App) -> Upstream:
        """The pool for an app; a discovered app's is made on its first request."""
        found = self.upstreams.get(app.name)
        # The same socket, the same pool: the app at its own host (routing.at_own_host) is
        # another App object for the same app.
        if found is None or found.app.socket != app.socket:
            if found is not None:
                found.close()  # a discovered app whose socket moved
            found = self.upstreams[app.name] = Upstream(app, self.config.timeouts.connect)
        return found

    def close_idle(self) -> None:
        """Close the apps' idle pooled connections: no client has been connected for a while
        (the server at rest), and a new one on a Unix socket costs well under a millisecond,
        while each kept holds its buffers and parser (a 256-connection load leaves 256)."""
        for upstream in self.upstreams.values():
            upstream.close()

    def close(self) -> None:
        for handle in self._drains:
            handle.cancel()
        self._drains.clear()
        self.monitor.close()
        self.close_idle()


def _host_policy(config: Config) -> HostPolicy:
    """The Host values answered: local names, allowed_hosts, and the apps' own host names
    (allowed by being configured)."""
    own = [name for name, _ in config.host_pairs()]
    return HostPolicy(config.listen.host, (*config.allowed_hosts, *own))


def _router(config: Config) -> routing.Router:
    """The routes of `config`: its apps, the dashboard, and the sockets found in sockets_dir."""
    lookup = None
    if config.sockets_dir is not None:
        lookup = Discovery(config.sockets_dir, config.apps).lookup
    return routing.Router(
        config.apps,
        config.dashboard,
        discover=lookup,
        hosts=config.host_pairs(),
        local_hosts=config.host_routes,
    )


def _pools(config: Config, kept: dict[str, Upstream]) -> dict[str, Upstream]:
    """A pool per app of `config`: the one in `kept` while the app's socket stays, else new."""
    upstreams: dict[str, Upstream] = {}
    for app in config.apps:
        upstream = kept.get(app.name)
        if upstream is None or upstream.app.socket != app.socket:
            upstream = Upstream(app, config.timeouts.connect)
        else:
            upstream.app = app
            upstream.connect_timeout = config.timeouts.connect
            # An app the reload made one sockgate runs: held for from now on, like any such.
            upstream.answered = upstream.answered or app.command is not None
        upstreams[app.name] = upstream
    return upstreams
