"""The pid file: one sockgate per workdir, and whether the one a file names still runs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import SockgateError


class PidFile:
    """`sockgate.pid` in the working directory; refuses to start over a live sockgate."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        other = live_pid(self.path)
        if other is not None and other != os.getpid():
            raise SockgateError(
                f"{self.path}: sockgate already runs here as pid {other}; stop it first "
                "or use another workdir"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def live_pid(path: Path) -> int | None:
    """The pid in a pid file if that process is alive; None without a file or a live process."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
