"""A small watchdog that stops the apps' process groups if sockgate dies without stopping them.

PR_SET_PDEATHSIG reaches an app's first process only: what that process started (a shell's
command, a server's workers) would outlive a SIGKILL of sockgate. The guard is a separate
process, in a session of its own, that reads the app process groups from a pipe (`+PGID` when
one starts, `-PGID` once it is gone). When the pipe closes and groups are left, sockgate
died: the guard sends SIGTERM to each, SIGKILL to what is left after the grace period, and exits.
On an orderly stop sockgate has emptied the list first and the guard just exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys

log = logging.getLogger(__name__)

# Run with `python -c`: no import of sockgate, so it works whatever sys.path the child gets.
_PROGRAM = r"""
import os, signal, sys, time
grace = float(sys.argv[1])
groups = set()
for line in sys.stdin:
    sign, pgid = line[:1], int(line[1:])
    (groups.add if sign == "+" else groups.discard)(pgid)
def signal_all(signum):
    for pgid in list(groups):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            groups.discard(pgid)
        except PermissionError:
            pass
signal_all(signal.SIGTERM)
end = time.monotonic() + grace
while groups and time.monotonic() < end:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class GroupGuard:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._proc: asyncio.subprocess.Process | None = None

    def __repr__(self) -> str:
        return f"<GroupGuard pid={self._proc and self._proc.pid}>"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PROGRAM,
            f"{self.grace:g}",
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # neither Ctrl-C nor the apps' group signals reach it
        )

    def watch(self, pgid: int) -> None:
        self._tell(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._tell(f"-{pgid}\n")

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        await proc.wait()

    def _tell(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._proc.stdin.write(line.encode())
