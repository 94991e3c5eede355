"""Real processes for tests: the proxy (`sockgate run`) and apps under uvicorn. Readiness is
waited for on a log line or a socket, with a deadline; never with a fixed sleep."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LISTENING = re.compile(r"listening on http://(\[[^\]]+\]|[^:/]+):(\d+)/")


def read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[str], deadline: float) -> str:
    """Read the process's stderr until a line matches; return everything read so far."""
    assert proc.stderr is not None
    seen: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        end = time.monotonic() + deadline
        while (left := end - time.monotonic()) > 0:
            if not sel.select(left):
                break
            line = proc.stderr.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line)
            if pattern.search(line):
                return "".join(seen)
    raise AssertionError(
        f"no line matching {pattern.pattern!r} within {deadline}s:\n" + "".join(seen)
    )


class Proxy:
    """`sockgate run` in a child process on a free loopback port."""

    def __init__(self, config_path: Path, *extra: str, cwd: Path | None = None) -> None:
        self.config_path = config_path
        self.args = [sys.executable, "-m", "sockgate", "run", "-c", str(config_path), *extra]
        self.cwd = cwd or config_path.parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.startup_log = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        self.startup_log = read_until(self.proc, LISTENING, 20)
        match = LISTENING.search(self.startup_log)
        assert match is not None
        self.port = int(match.group(2))
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
    """An ASGI app from tests/apps under `uvicorn --uds`."""

    def __init__(self, target: str, path: Path) -> None:
        self.target = target
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Uvicorn:
        root = Path(__file__).resolve().parents[2]
        env = os.environ | {"PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.target,
                "--uds",
                str(self.path),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def wait_for_line(path: Path, needle: str, deadline: float = 10) -> str:
    """Until a log file holds a line with `needle`; returns that line."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        time.sleep(0.02)  # a log file gives no event to wait on; bounded by the deadline
    raise AssertionError(f"{path} has no line with {needle!r} after {deadline}s")
