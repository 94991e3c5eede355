"""Child processes of the bench: each in its own process group with its output in a log file,
all stopped in one place; readiness by connecting with a deadline; CPU time and memory from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 5.0
READY_DEADLINE = 30.0


class BenchError(Exception):
    """Something the bench needs did not work; the message says what."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts children in new sessions (so a group signal reaches nginx's workers and sockgate's
    children too) and stops every one of them, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []
        logdir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        args: Sequence[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            _signal_group(child, signal.SIGTERM)
        for child in reversed(self.children):
            _reap(child)
        self.children.clear()


def _signal_group(child: Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _reap(child: Child) -> None:
    try:
        child.proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        _signal_group(child, signal.SIGKILL)
        child.proc.wait(STOP_GRACE)
    # Workers that outlive their leader (nginx's, sockgate's) are still in its group.
    _signal_group(child, signal.SIGKILL)


def _backoff() -> Iterable[float]:
    delay = 0.005
    while True:
        yield delay
        delay = min(delay * 2, 0.2)


def _connect_until(family: int, address: object, child: Child, what: str, deadline: float) -> None:
    end = time.monotonic() + deadline
    for delay in _backoff():
        if child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} before {what} answered:\n"
                + child.tail()
            )
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(address)
                return
            except OSError:
                pass
        if time.monotonic() > end:
            raise BenchError(f"{child.name}: {what} not accepting after {deadline:g}s")
        time.sleep(delay)  # a connect retry with backoff: nothing else signals readiness


def wait_tcp(port: int, child: Child, deadline: float = READY_DEADLINE) -> None:
    _connect_until(socket.AF_INET, ("127.0.0.1", port), child, f"127.0.0.1:{port}", deadline)


def wait_unix(path: Path, child: Child, deadline: float = READY_DEADLINE) -> None:
    _connect_until(socket.AF_UNIX, str(path), child, str(path), deadline)


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free right now (nginx and HAProxy cannot report one they chose)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# /proc accounting --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of `root` and its live descendants."""
    ticks = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_mb(root: int, key: str) -> float:
    """`key` of /proc/PID/status (VmRSS, VmHWM) summed over the tree, in MB (10^6 bytes)."""
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, ValueError):
            total += _status_kb(pid, key)
    return total * 1024 / 1e6
