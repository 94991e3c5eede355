"""`workers = N`: N engine processes on one port (SO_REUSEPORT), watched by this process.

The supervisor reserves the port with a bound socket that never listens (the kernel only hands
connections to listening members of a reuseport group), forks the workers, each of which binds
its own listening socket on that port, and then only waits for signals and exits: a worker that
dies unasked is started again; SIGINT/SIGTERM are passed on and the supervisor exits when all
workers have drained. Workers die with the supervisor (PR_SET_PDEATHSIG), so none is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback

from . import server
from .config import Config
from .errors import SockgateError

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
READY_DEADLINE = 30.0
# A worker that keeps dying is restarted at most this often.
RESTART_BACKOFF = 1.0
_PR_SET_PDEATHSIG = 1


def _sockets(host: str, port: int, *, listen: bool) -> list[socket.socket]:
    try:
        return server.listen_on(host, port, reuse_port=True, listen=listen)
    except OSError as exc:
        raise SockgateError(server.bind_error(f"{host}:{port}", exc)) from None


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self._ready_r, self._ready_w = os.pipe()
        self._port = 0

    def __repr__(self) -> str:
        return f"<Supervisor workers={sorted(self.workers)} stopping={self.stopping}>"

    def run(self) -> int:
        listen = self.config.listen
        reserved = _sockets(listen.host, listen.port, listen=False)
        self._port = reserved[0].getsockname()[1]
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            with contextlib.ExitStack() as stack, server.PidFile(self.config.pid_file):
                for sock in reserved:
                    stack.enter_context(sock)
                for slot in range(self.config.workers):
                    self._spawn(slot)
                self._await_ready()
                server.log_banner(self.config, listen.host, self._port)
                log.info("%d worker processes", self.config.workers)
                self._watch()
        finally:
            self._stop_all(signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        log.info("stopped")
        return 0

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os._exit(self._worker(slot))
        self.workers[pid] = slot

    def _worker(self, slot: int) -> int:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            # Out of the terminal's process group: Ctrl-C reaches the supervisor alone, which
            # passes it on once (a second signal would skip the workers' drain).
            os.setpgid(0, 0)
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            os.close(self._ready_r)
            socks = _sockets(self.config.listen.host, self._port, listen=True)
            ready_w = self._ready_w

            def ready(_: server.Server) -> None:
                os.write(ready_w, b".")

            return server.run(self.config, socks=socks, worker=True, slot=slot, on_ready=ready)
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
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                raise SockgateError(f"worker {pid} failed to start (exit status {status >> 8})")

    def _watch(self) -> None:
        restarts: dict[int, float] = {}
        while self.workers:
            info = signal.sigwaitinfo(_SIGNALS)
            if info.si_signo in (signal.SIGINT, signal.SIGTERM):
                if not self.stopping:
                    log.info("stopping %d workers", len(self.workers))
                self.stopping = True
                self._stop_all(info.si_signo)
            self._reap(restarts)

    def _reap(self, restarts: dict[int, float]) -> None:
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None or self.stopping:
                continue
            log.error("worker %d exited unasked (status %d); starting another", pid, status)
            wait = restarts.get(slot, 0.0) + RESTART_BACKOFF - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # crash-loop brake, not synchronisation
            restarts[slot] = time.monotonic()
            self._spawn(slot)

    def _stop_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            for pid in list(self.workers):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            self.workers.clear()


def run(config: Config) -> int:
    if config.workers == 1:
        return server.run(config)
    return Supervisor(config).run()
