"""Real processes for tests: the proxy (`sockgate run`) and apps under uvicorn. Readiness is
waited for on a log line or a socket, with a deadline; never with a fixed sleep."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"listening on http://(\[[^\]]+\]|[^:/]+):(\d+)/")
NGINX_STARTING = re.compile(r"starting nginx for http://(\[[^\]]+\]|[^:/]+):(\d+)")


def free_port() -> int:
    """A loopback port free right now (nginx cannot report a port the kernel picked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(AssertionError):
    """Another process took the free port before the proxy could bind it."""


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], deadline: float = 20, pid_file: Path | None = None
) -> None:
    """Until `port` answers; with `pid_file` (nginx's), only once that is written too: nginx
    writes it after binding, so a connect cannot be mistaken for another process's listener."""
    end = time.monotonic() + deadline
    delay = 0.01
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited with {proc.returncode} before listening")
        try:
            if pid_file is None or pid_file.exists():
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            time.sleep(delay)  # nginx gives no other sign that it has started
            delay = min(delay * 2, 0.2)
        except OSError:
            time.sleep(delay)  # a connect retry with backoff: nothing else signals readiness
            delay = min(delay * 2, 0.2)
    raise AssertionError(f"nothing listens on port {port} after {deadline}s")


class Proxy:
    """`sockgate run` in a child process on a free loopback port. Its stderr is drained by a
    thread (a full pipe would block the proxy) and kept: `output()`."""

    def __init__(
        self,
        config_path: Path,
        *extra: str,
        cwd: Path | None = None,
        engine: str = "builtin",
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.config_path = config_path
        self.engine = engine
        self.env = env  # set over this process's environment
        self.pass_fds = pass_fds
        self.args = [sys.executable, "-m", "sockgate", "run", "-c", str(config_path), *extra]
        self.cwd = cwd or config_path.parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.startup_log = ""
        self._lines: list[str] = []
        self._new_line = threading.Condition()
        self._eof = False
        self._drain: threading.Thread | None = None

    def output(self) -> str:
        """Everything the proxy wrote to stderr so far."""
        with self._new_line:
            return "".join(self._lines)

    def wait_for_output(self, pattern: re.Pattern[str] | str, deadline: float = 20) -> str:
        """Until a line of the proxy's stderr matches; returns all output up to then."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._new_line:
            found = self._new_line.wait_for(
                lambda: (
                    any(regex.search(line) for line in self._lines)
                    or (self.proc is not None and self.proc.poll() is not None and self._eof)
                ),
                timeout=deadline,
            )
            text = "".join(self._lines)
        if not found or not regex.search(text):
            raise AssertionError(f"no line matching {regex.pattern!r} in {deadline}s:\n{text}")
        return text

    def wait_for_lines(self, pattern: str, count: int, deadline: float = 20) -> list[str]:
        """Until `count` lines of the proxy's stderr match; returns the matching lines."""
        regex = re.compile(pattern)

        def matching() -> list[str]:
            return [line for line in self._lines if regex.search(line)]

        with self._new_line:
            self._new_line.wait_for(
                lambda: (
                    len(matching()) >= count
                    or (self.proc is not None and self.proc.poll() is not None and self._eof)
                ),
                timeout=deadline,
            )
            found, text = matching(), "".join(self._lines)
        if len(found) < count:
            raise AssertionError(f"{len(found)} of {count} lines matching {pattern!r}:\n{text}")
        return found

    def _drain_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            with self._new_line:
                self._lines.append(line.decode(errors="replace"))
                self._new_line.notify_all()
        with self._new_line:
            self._eof = True
            self._new_line.notify_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        env = None if self.env is None else os.environ | self.env
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=env,
            pass_fds=self.pass_fds,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        ready = NGINX_STARTING if self.engine == "nginx" else LISTENING
        try:
            self.startup_log = self.wait_for_output(ready, 20)
        except AssertionError:
            self.stop(signal.SIGKILL)  # reap it and close the pipe before reporting
            raise
        match = ready.search(self.startup_log)
        assert match is not None
        self.port = int(match.group(2))
        if self.engine == "nginx":
            from sockgate.config import load

            pid_file = load(self.config_path).workdir / "nginx.pid"
            try:
                wait_for_port(self.port, self.proc, pid_file=pid_file)
            except AssertionError:
                self.stop(signal.SIGKILL)
                if "address already in use" in self.output().lower():
                    raise PortTaken(self.output()) from None
                raise
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self._drain is not None:
                self._drain.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return code

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes] | None, deadline: float = 20) -> None:
    """Until a connect to the Unix socket succeeds (the app is accepting)."""
    end = time.monotonic() + deadline
    delay = 0.01
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"app exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(delay)  # a connect retry with backoff: there is no event to wait on
        delay = min(delay * 2, 0.2)
    raise AssertionError(f"{path} did not accept connections within {deadline}s")


class Uvicorn:
    """An ASGI app from tests/apps under `uvicorn --uds`; `extra` are more uvicorn options."""

    def __init__(self, target: str, path: Path, *extra: str) -> None:
        self.target = target
        self.path = path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.target,
            "--uds",
            str(self.path),
            "--log-level",
            "warning",
            "--no-access-log",
            *self.extra,
        ]

    def __enter__(self) -> Uvicorn:
        root = Path(__file__).resolve().parents[2]
        env = os.environ | {"PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_socket(self.path, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Gunicorn(Uvicorn):
    """A WSGI app from tests/apps under `gunicorn --bind unix:PATH` (one sync worker)."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"unix:{self.path}",
            "--workers",
            "1",
            "--graceful-timeout",
            "2",
            "--log-level",
            "warning",
            *self.extra,
            self.target,
        ]


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def wait_for_line(path: Path, needle: str, deadline: float = 10) -> str:
    """Until a log file holds a complete line with `needle`; returns that line."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists():
            for line in path.read_text(errors="replace").split("\n")[:-1]:
                if needle in line:
                    return line
        time.sleep(0.02)  # a log file gives no event to wait on; bounded by the deadline
    raise AssertionError(f"{path} has no line with {needle!r} after {deadline}s")


def run_sockgate(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`python -m sockgate ARGS` to completion (commands that exit on their own), with this
    interpreter's import path, so a checkout's sources are the ones run."""
    return subprocess.run(
        [sys.executable, "-m", "sockgate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
