"""Run the demo apps as child processes, each served by uvicorn on its own Unix socket."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from ..config import MAX_SOCKET_PATH
from ..errors import SocketPathTooLong

log = logging.getLogger(__name__)

DEMO_APPS: Mapping[str, str] = {
    "clock": "sockgate.demo.apps:clock",
    "echo": "sockgate.demo.apps:echo",
}
"""App name -> the `module:attribute` uvicorn serves."""

READY_TIMEOUT = 10.0
"""Seconds every app gets, together, to accept a connection on its socket."""
STOP_TIMEOUT = 5.0
"""Seconds the apps get, together, to exit after SIGTERM before they are killed."""
GRACEFUL_SHUTDOWN = 2
"""Seconds uvicorn lets open streams (SSE, WebSocket) run on after SIGTERM before cancelling."""


class DemoApps:
    """The demo apps as child processes, running while inside `with DemoApps(workdir):`.

    Sockets go to `workdir/sockets/<name>.sock` and each app's output to `workdir/logs/<name>.log`.
    Keep `workdir` short: a Unix socket path holds at most 107 bytes.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Mapping[str, str] = DEMO_APPS,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.workdir = workdir
        self._targets = dict(targets)
        self._ready_timeout = ready_timeout
        self._sockets = {name: workdir / "sockets" / f"{name}.sock" for name in self._targets}
        self._logs = {name: workdir / "logs" / f"{name}.log" for name in self._targets}
        for name, path in self._sockets.items():
            size = len(os.fsencode(path))
            if size > MAX_SOCKET_PATH:
                detail = f"{size} bytes, the limit is {MAX_SOCKET_PATH}: use a shorter workdir"
                raise SocketPathTooLong(name, os.fspath(path), detail)
        (workdir / "sockets").mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._running = False

    @property
    def apps(self) -> dict[str, Path]:
        """App name -> the Unix socket it listens on."""
        return dict(self._sockets)

    @property
    def pids(self) -> dict[str, int]:
        """App name -> process id of the children last started (they may have exited since)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    @property
    def returncodes(self) -> dict[str, int | None]:
        """App name -> exit status, None while the app runs (negative: killed by that signal)."""
        return {name: proc.poll() for name, proc in self._procs.items()}

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        children = ", ".join(f"{name}={pid}" for name, pid in self.pids.items())
        return f"<DemoApps {os.fspath(self.workdir)!r} {state} pids=[{children}]>"

    def __enter__(self) -> Self:
        if self._running:
            raise RuntimeError("the demo apps are already running")
        self._procs = {}
        self._running = True
        try:
            for name, target in self._targets.items():
                self._start(name, target)
            deadline = time.monotonic() + self._ready_timeout
            for name in self._targets:
                self._wait_ready(name, deadline)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self, name: str, target: str) -> None:
        path = self._sockets[name]
        # A stale socket file could accept a connection before uvicorn binds the new one.
        path.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--uds",
            os.fspath(path),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            str(GRACEFUL_SHUTDOWN),
        ]
        with self._logs[name].open("wb") as output:
            self._procs[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("demo app %s: pid %d, socket %s", name, self._procs[name].pid, path)

    def _wait_ready(self, name: str, deadline: float) -> None:
        """Return once the app accepts a connection; raise if it exits or the deadline passes."""
        proc, path = self._procs[name], self._sockets[name]
        delay = 0.005
        while not _accepts(path):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"demo app {name!r} exited with status {proc.returncode} before listening"
                    f" on {path}; the end of {self._logs[name]}:\n{_tail(self._logs[name])}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"demo app {name!r} did not listen on {path} within {self._ready_timeout:g}s;"
                    f" the end of {self._logs[name]}:\n{_tail(self._logs[name])}"
                )
            # Waiting on the child rather than sleeping: an early exit is noticed at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(delay, remaining))
            delay = min(delay * 2, 0.1)

    def _stop(self) -> None:
        """SIGTERM every app's process group, wait, SIGKILL what is left, remove the sockets."""
        for proc in self._procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in self._procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("demo app %s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for path in self._sockets.values():
            path.unlink(missing_ok=True)
        self._running = False


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError):
            return False
    return True


def _signal_group(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # start_new_session=True made each child the leader of its own process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_bytes()[-4096:].decode("utf-8", errors="replace")
    except OSError as error:
        return f"(cannot read the log: {error})"
    return "\n".join(text.splitlines()[-lines:])
