"""`workers = N`: N engine processes on one port (SO_REUSEPORT), watched by this process.

The supervisor reserves the port with a bound socket that never listens (the kernel only hands
connections to listening members of a reuseport group), forks the workers, each of which binds
its own listening socket on that port, and then only waits for signals and exits: a worker that
dies unasked is started again; SIGINT/SIGTERM are passed on and the supervisor exits when all
workers have drained. Workers die with the supervisor (PR_SET_PDEATHSIG), so none is orphaned.

SIGHUP (or an edit, with `--watch`) is validated here first, so an invalid config is reported
once; a valid one is passed on to every worker, each of which reloads on its own, and becomes
the config of workers started later.

Under socket activation the supervisor holds the listening sockets systemd passed instead, and
every worker (forked, so holding them too) accepts on the same sockets. The supervisor is the
process systemd is told about (READY=1 once every worker serves, STOPPING=1, RELOADING=1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from ..apps import children, process
from ..config import Config, Listen, Loader, reconfig
from ..engine import serve
from ..engine.server import Server
from ..errors import ConfigError, SockgateError
from . import systemd
from .listen import bind_error, listen_on
from .pidfile import PidFile
from .watch import watching

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP}
READY_DEADLINE = 30.0
# A worker that keeps dying is restarted at most this often.
RESTART_BACKOFF = 1.0


def _sockets(host: str, port: int, *, listen: bool) -> list[socket.socket]:
    try:
        return listen_on(host, port, reuse_port=True, listen=listen)
    except OSError as exc:
        raise SockgateError(bind_error(f"{host}:{port}", exc)) from None


class Supervisor:
    def __init__(
        self,
        config: Config,
        loader: Loader | None = None,
        watch: bool = False,
        socks: list[socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.loader = loader or Loader.of(config)
        self.watch = watch
        self.inherited = socks  # the listening sockets of socket activation, every worker's
        self.workers: dict[int, int] = {}  # pid -> slot
        self.apps: int | None = None  # the process that runs the supervised apps
        self.stopping = False
        self._ready_r, self._ready_w = os.pipe()
        self._port = 0
        self._address = ""  # as told to systemd

    def __repr__(self) -> str:
        return (
            f"<Supervisor workers={sorted(self.workers)} apps={self.apps} stopping={self.stopping}>"
        )

    def run(self) -> int:
        listen = self.config.listen
        reserved = self.inherited or _sockets(listen.host, listen.port, listen=False)
        host = listen.host if self.inherited is None else reserved[0].getsockname()[0]
        self._port = reserved[0].getsockname()[1]
        self._address = str(Listen(host, self._port))
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            with contextlib.ExitStack() as stack, PidFile(self.config.pid_file):
                for sock in reserved:
                    stack.enter_context(sock)
                # Before the workers: the apps start while the workers get ready.
                self.apps = process.start(self.config)
                for slot in range(self.config.workers):
                    self._spawn(slot)
                self._await_ready()
                serve.log_banner(self.config, host, self._port)
                log.info("%d worker processes", self.config.workers)
                systemd.ready(self._address)
                if self.watch:
                    # Started with the signals blocked: its SIGHUP waits for sigwaitinfo.
                    stack.enter_context(watching(self.config))
                self._watch()
        finally:
            self._stop_all(signal.SIGKILL)
            # After the workers: requests under way could still reach their apps.
            process.stop(self.apps)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        log.info("stopped")
        return 0

    def _spawn(self, slot: int) -> None:
        arm = children.die_with_parent()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os._exit(self._worker(arm, slot))
        self.workers[pid] = slot

    def _worker(self, die_with_parent: Callable[[], None], slot: int) -> int:
        try:
            # A reload passed on before the worker's loop handles SIGHUP must not end it: this
            # worker was forked with the supervisor's config of the moment anyway.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            # Out of the terminal's process group: Ctrl-C reaches the supervisor alone, which
            # passes it on once (a second signal would skip the workers' drain).
            os.setpgid(0, 0)
            die_with_parent()
            os.close(self._ready_r)
            socks = self.inherited or _sockets(self.config.listen.host, self._port, listen=True)
            ready_w = self._ready_w

            def ready(_: Server) -> None:
                os.write(ready_w, b".")

            return serve.run(
                self.config,
                socks=socks,
                worker=True,
                slot=slot,
                on_ready=ready,
                loader=self.loader,
            )
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            return 1

    def _await_ready(self) -> None:
        needed = len(self.workers)
        end = time.monotonic() + READY_DEADLINE
        while needed:
            left = end - time.monotonic()
            readable, _, _ = select.select([self._ready_r], [], [], max(0.0, min(left, 0.1)))
            if readable:
                needed -= len(os.read(self._ready_r, needed))
            elif left <= 0:
                raise SockgateError(f"workers not ready after {READY_DEADLINE:g}s")
            for pid in list(self.workers):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    raise SockgateError(f"worker {pid} failed to start (exit status {status >> 8})")

    def _watch(self) -> None:
        restarts: dict[int, float] = {}
        while self.workers:
            info = signal.sigwaitinfo(_SIGNALS)
            if info.si_signo == signal.SIGHUP and not self.stopping:
                self._reload()
            if info.si_signo in (signal.SIGINT, signal.SIGTERM):
                if not self.stopping:
                    log.info("stopping %d workers", len(self.workers))
                    systemd.stopping()
                self.stopping = True
                self._stop_all(info.si_signo)
            self._reap(restarts)

    def _reload(self) -> None:
        """Validate once here; if valid, every worker reloads the same file itself."""
        try:
            new = self.loader.load()
            reconfig.check_fixed(self.config, new)
        except ConfigError as exc:
            log.error("%s", reconfig.refused(exc).message)
            return
        changes = reconfig.compare(self.config, new)
        log.info("reloading %d workers: %s", len(self.workers), changes.summary())
        systemd.reloading()
        self.config = new  # for workers started from now on
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        systemd.reloaded(self._address)

    def _reap(self, restarts: dict[int, float]) -> None:
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            if pid == self.apps:
                self._apps_exited(status)
                continue
            slot = self.workers.pop(pid, None)
            if slot is None or self.stopping:
                continue
            log.error("worker %d exited unasked (status %d); starting another", pid, status)
            wait = restarts.get(slot, 0.0) + RESTART_BACKOFF - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # crash-loop brake, not synchronisation
            restarts[slot] = time.monotonic()
            self._spawn(slot)

    def _apps_exited(self, status: int) -> None:
        self.apps = None
        if self.stopping:
            return
        log.error("the apps process exited unasked (status %d); starting another", status)
        time.sleep(RESTART_BACKOFF)  # crash-loop brake, not synchronisation
        self.apps = process.start(self.config)

    def _stop_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            for pid in list(self.workers):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            self.workers.clear()


def run(
    config: Config,
    *,
    loader: Loader | None = None,
    watch: bool = False,
    socks: list[socket.socket] | None = None,
) -> int:
    """Serve `config` until stopped; on `socks` (socket activation) instead of binding
    `listen`."""
    if config.workers == 1:
        return serve.run(config, loader=loader, watch=watch, socks=socks)
    return Supervisor(config, loader, watch, socks).run()
