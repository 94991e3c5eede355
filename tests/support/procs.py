"""Supervised apps in tests: configs that run tests/apps/sockapp.py, and the process table."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from tests.support.proc import write_config

SOCKAPP = Path(__file__).resolve().parents[1] / "apps" / "sockapp.py"


def marker() -> str:
    """A value for SGTEST_MARK: every process of one test's apps carries it in its environment."""
    return uuid.uuid4().hex


def sockapp(*args: str) -> str:
    """A `command` that runs the test app on its socket."""
    return f"{sys.executable} {SOCKAPP} {{socket}} {' '.join(args)}".strip()


def supervised_config(
    tmp: Path, mark: str, apps: dict[str, dict[str, object]], extra: str = ""
) -> Path:
    """sockgate.toml for `apps` (name -> keys), each with env SGTEST_MARK = mark."""
    lines = ['listen = "127.0.0.1:0"', 'workdir = "work"', extra]
    for name, keys in apps.items():
        lines.append(f"[apps.{name}]")
        for key, value in keys.items():
            lines.append(f"{key} = {_literal(value)}")
        lines.append(f'env = {{ SGTEST_MARK = "{mark}" }}')
    return write_config(tmp / "sockgate.toml", "\n".join(lines) + "\n")


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def marked(mark: str) -> set[int]:
    """Live processes (zombies excluded) whose environment holds SGTEST_MARK=mark."""
    needle = f"SGTEST_MARK={mark}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(int(entry.name))
    return found


def wait_marked(mark: str, count: int, deadline: float = 10) -> set[int]:
    """Until exactly `count` processes carry the marker; returns them."""
    end = time.monotonic() + deadline
    while True:
        found = marked(mark)
        if len(found) == count or time.monotonic() > end:
            break
        time.sleep(0.05)  # the process table gives no event to wait on; bounded by the deadline
    assert len(found) == count, f"{len(found)} processes carry the marker, not {count}: {found}"
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def log_lines(path: Path, prefix: str) -> list[str]:
    """The complete lines of a log file that start with `prefix` (a line still being written
    when the file is read, with no newline yet, is not one)."""
    if not path.exists():
        return []
    complete = path.read_text(errors="replace").split("\n")[:-1]
    return [line for line in complete if line.startswith(prefix)]


def wait_log_lines(path: Path, prefix: str, count: int, deadline: float = 20) -> list[str]:
    """Until a log file holds `count` lines starting with `prefix`."""
    end = time.monotonic() + deadline
    while True:
        lines = log_lines(path, prefix)
        if len(lines) >= count or time.monotonic() > end:
            break
        time.sleep(0.05)  # a log file gives no event to wait on; bounded by the deadline
    assert len(lines) >= count, f"{path}: {len(lines)} lines start with {prefix!r}, not {count}"
    return lines
