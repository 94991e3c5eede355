"""The supervised apps in a process of their own, for engines whose main process runs no event
loop: `workers = N` (the supervisor only waits for signals) and nginx. The apps are started once,
there, not once per worker.

The process leaves the terminal's process group (Ctrl-C reaches sockgate alone, which stops the
engine first and the apps after it), dies with sockgate (PR_SET_PDEATHSIG), and on SIGTERM stops
every app: SIGTERM to each app's group, SIGKILL after its stop_timeout; a second SIGTERM kills
them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import traceback

from ..config import Config
from . import children
from .discovery import prepare_discovery
from .managed import AppManager

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def start(config: Config) -> int | None:
    """Fork the apps process; its pid, or None when the config has no app to run."""
    if not config.supervised:
        prepare_discovery(config)
        return None
    arm = children.die_with_parent()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        code = 1
        try:
            os.setpgid(0, 0)
            arm()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            code = asyncio.run(_run(config))
        except BaseException:
            traceback.print_exc(file=sys.stderr)
        finally:
            os._exit(code)
    return pid


def stop(pid: int | None) -> int:
    """SIGTERM to the apps process, and wait for it (it stops the apps first)."""
    if pid is None:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 0
    return os.waitstatus_to_exitcode(status)


async def _run(config: Config) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)  # whatever the parent had installed
    apps = AppManager(config.supervised, config.logs_dir)
    loop = asyncio.get_running_loop()
    stopping, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if stopping.is_set() else stopping).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    prepare_discovery(config)
    await apps.start()
    await stopping.wait()
    graceful = asyncio.ensure_future(apps.stop())
    forced = asyncio.ensure_future(force.wait())
    await asyncio.wait([graceful, forced], return_when=asyncio.FIRST_COMPLETED)
    if not graceful.done():
        await apps.stop(now=True)
    forced.cancel()
    await asyncio.gather(graceful, forced, return_exceptions=True)
    return 0
