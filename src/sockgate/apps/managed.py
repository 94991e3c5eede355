"""Apps that sockgate runs itself (`command = ...`): started, watched, restarted, stopped.

Each app has one task that runs it, over and over: prepare the socket's folder (and remove a
stale socket file), start the command in a process group of its own, wait until its socket
accepts connections, then wait for it to exit, or with `start = "on-demand"` to go idle. An app
that exits unasked starts again after a backoff that doubles from BACKOFF_FIRST up to
BACKOFF_MAX, and is back to BACKOFF_FIRST once a run lasted BACKOFF_RESET: a crash loop costs a
start every 30 seconds, not a spinning CPU.

Stopping sends SIGTERM to the app's process group and SIGKILL after its `stop_timeout`; each app
also gets SIGTERM from the kernel if sockgate dies (PR_SET_PDEATHSIG, see children).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from enum import Enum, auto
from pathlib import Path

from .. import errors
from ..config import App, Command
from . import children
from .guard import GroupGuard
from .output import AppOutput

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET = 10.0
# Readiness: there is no event for "a process listens on this socket", so connect() is retried,
# from 5 ms doubling to this, until the app's ready_timeout (or its exit).
READY_RETRY_MAX = 0.25
# After the app exited, how long what is left in its output pipe may take to arrive.
OUTPUT_DRAIN = 2.0


class AppState(Enum):
    STOPPED = auto()  # not running: on demand and idle, or sockgate stopping
    STARTING = auto()  # started; its socket does not accept connections yet
    RUNNING = auto()  # its socket accepts connections
    BACKOFF = auto()  # exited or failed to start; waiting before the next start
    STOPPING = auto()  # asked to exit (SIGTERM), waiting for it


class StartFailed(Exception):
    """The app could not be started at all (its socket path is taken, the command is missing)."""


class ManagedApp:
    """One supervised app: its state, its process, its output."""

    def __init__(self, app: App, logs_dir: Path, guard: GroupGuard | None = None) -> None:
        assert app.command is not None
        self.guard = guard
        self.app = app
        self.command: Command = app.command
        self.output = AppOutput(app.name, logs_dir / f"{app.name}.log")
        self.state = AppState.STOPPED
        self.pid: int | None = None
        self.starts = 0
        self.last_exit = ""  # what became of the last run, for pages, logs and the status
        self.retry_at: float | None = None
        self.active = 0  # requests and tunnels under way
        self.last_used = time.monotonic()
        self._delay = BACKOFF_FIRST
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ManagedApp {self.app.name} {self.state.name} pid={self.pid} starts={self.starts}>"

    # --- what the manager and the engine ask
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name=f"app {self.app.name}")
            # At once, not when the task first runs: a request arriving in between waits.
            self._set(AppState.STARTING)

    async def stop(self, *, now: bool = False) -> None:
        task = self._task
        if task is None:
            return
        if now and self.pid is not None:
            children.signal_group(self.pid, signal.SIGKILL)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def ready(self) -> errors.UpstreamError | None:
        """Wait until the app accepts connections, starting it if it is on demand and stopped.
        None when it does; else the error a request gets."""
        try:
            async with asyncio.timeout(self.command.ready_timeout):
                while self.state is not AppState.RUNNING:
                    changed = self._changed
                    if self.state is AppState.BACKOFF:
                        return self._not_running()
                    if self.state is AppState.STOPPED:
                        if not self.command.on_demand:
                            return self._not_running()
                        self.start()
                    await changed.wait()
        except TimeoutError:
            return self._not_running(f"not ready after {self.command.ready_timeout:g}s")
        return None

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a request or a tunnel: an on-demand app is not idle while it lasts."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self.last_used = time.monotonic()

    def _not_running(self, detail: str = "") -> errors.AppNotRunning:
        parts = [detail or self.last_exit or self.state.name.lower()]
        if self.retry_at is not None and not self.command.on_demand:
            parts.append(f"next start in {max(0.0, self.retry_at - time.monotonic()):.1f}s")
        return errors.AppNotRunning(self.app.name, str(self.app.socket), "; ".join(parts))

    def _set(self, state: AppState) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the task that runs the app
    async def _supervise(self) -> None:
        try:
            while True:
                began = time.monotonic()
                outcome = await self._run_once()
                if outcome is None:
                    return  # stopped after idle_stop without requests
                if time.monotonic() - began >= BACKOFF_RESET:
                    self._delay = BACKOFF_FIRST
                await self._backoff(outcome)
                if self.command.on_demand:
                    return  # the next request starts it
        finally:
            self.pid = None
            self.retry_at = None
            self._set(AppState.STOPPED)

    async def _backoff(self, outcome: str) -> None:
        delay = self._delay
        self._delay = min(delay * 2, BACKOFF_MAX)
        self.last_exit = outcome
        self.retry_at = time.monotonic() + delay
        self._set(AppState.BACKOFF)
        then = "starting it again" if not self.command.on_demand else "a request may start it"
        log.warning("app %s %s; %s in %gs", self.app.name, outcome, then, delay)
        self.output.note(f"{outcome}; {then} in {delay:g}s")
        await asyncio.sleep(delay)  # the restart backoff itself; stop() cancels it
        self.retry_at = None

    async def _run_once(self) -> str | None:
        """Start the app and wait until it ends: what became of it, or None after an idle stop."""
        self.starts += 1
        self._set(AppState.STARTING)
        try:
            prepare_socket(self.app.socket)
            proc = await self._spawn()
        except StartFailed as exc:
            log.error("app %s: cannot start: %s", self.app.name, exc)
            return f"could not start: {exc}"
        self.pid = proc.pid
        if self.guard is not None:
            self.guard.watch(proc.pid)
        log.info("app %s: started (pid %d): %s", self.app.name, proc.pid, self.command.shown)
        self.output.note(f"started (pid {proc.pid}): {self.command.shown}")
        assert proc.stdout is not None
        exited = asyncio.ensure_future(proc.wait())
        pump = asyncio.ensure_future(self.output.pump(proc.stdout))
        try:
            failure = await self._until_ready(exited)
            if failure is not None:
                last = self.output.last_lines() or "(no output)"
                log.error("app %s %s; its last output:\n%s", self.app.name, failure, last)
                return failure
            self._set(AppState.RUNNING)
            log.info("app %s: ready on %s", self.app.name, self.app.socket)
            if await self._until_exit_or_idle(exited):
                log.info(
                    "app %s: stopping after %gs without requests",
                    self.app.name,
                    self.command.idle_stop,
                )
                return None
            return exit_text(exited.result())
        finally:
            await self._end(proc, exited, pump)

    async def _spawn(self) -> asyncio.subprocess.Process:
        cmd = self.command
        env = (
            os.environ
            | {
                "PYTHONUNBUFFERED": "1",  # Python apps' output arrives line by line, as honcho does
                "SOCKGATE_APP": self.app.name,
                "SOCKGATE_SOCKET": str(self.app.socket),
            }
            | dict(cmd.env)
        )
        try:
            return await asyncio.create_subprocess_exec(
                *cmd.argv,
                cwd=cmd.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one, not by Ctrl-C
                preexec_fn=children.die_with_parent(),
            )
        except OSError as exc:
            raise StartFailed(f"cannot run {cmd.argv[0]!r}: {exc.strerror or exc}") from None
        except subprocess.SubprocessError as exc:
            raise StartFailed(f"cannot run {cmd.argv[0]!r}: {exc}") from None

    async def _until_ready(self, exited: asyncio.Future[int]) -> str | None:
        socket, limit = self.app.socket, self.command.ready_timeout
        delay = 0.005
        try:
            async with asyncio.timeout(limit):
                while not children.accepts(socket):
                    done, _ = await asyncio.wait([exited], timeout=delay)
                    if done:
                        return f"{exit_text(exited.result())} before accepting connections"
                    delay = min(delay * 2, READY_RETRY_MAX)
        except TimeoutError:
            return f"did not accept connections on {socket} within {limit:g}s"
        return None

    async def _until_exit_or_idle(self, exited: asyncio.Future[int]) -> bool:
        """False when the app exited; True when an on-demand app went idle."""
        idle_stop = self.command.idle_stop if self.command.on_demand else None
        while True:
            timeout = None
            if idle_stop is not None:
                idle_for = time.monotonic() - self.last_used
                if self.active == 0 and idle_for >= idle_stop:
                    return True
                timeout = idle_stop - idle_for if self.active == 0 else idle_stop
            done, _ = await asyncio.wait([exited], timeout=timeout)
            if done:
                return False

    async def _end(
        self,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Future[int],
        pump: asyncio.Future[None],
    ) -> None:
        """The app's process (and whatever it left in its group) gone, its output drained."""
        try:
            if proc.returncode is None:
                self._set(AppState.STOPPING)
                await self._terminate(proc, exited)
                log.info("app %s: stopped (%s)", self.app.name, exit_text(exited.result()))
                self.output.note(f"stopped ({exit_text(exited.result())})")
            else:
                self.output.note(exit_text(proc.returncode))
        finally:
            children.signal_group(proc.pid, signal.SIGKILL)  # leftovers of its group
            if self.guard is not None:
                self.guard.forget(proc.pid)
            self.pid = None
            await asyncio.wait([pump], timeout=OUTPUT_DRAIN)
            pump.cancel()
            remove_stale(self.app.socket)

    async def _terminate(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]
    ) -> None:
        timeout = self.command.stop_timeout
        try:
            children.signal_group(proc.pid, signal.SIGTERM)
            done, _ = await asyncio.wait([exited], timeout=timeout)
            if not done:
                log.warning(
                    "app %s: still running %gs after SIGTERM: killing it", self.app.name, timeout
                )
                children.signal_group(proc.pid, signal.SIGKILL)
                await asyncio.wait([exited])
        except BaseException:
            children.signal_group(proc.pid, signal.SIGKILL)  # cancelled again: no more waiting
            raise


class AppManager:
    """Every supervised app of a config, and what the engine asks about them."""

    def __init__(self, apps: Sequence[App], logs_dir: Path) -> None:
        supervised = [app for app in apps if app.command is not None]
        grace = max((app.command.stop_timeout for app in supervised if app.command), default=0)
        self.guard = GroupGuard(grace) if supervised else None
        self.apps = {app.name: ManagedApp(app, logs_dir, self.guard) for app in supervised}

    def __repr__(self) -> str:
        states = ", ".join(f"{name}={m.state.name}" for name, m in self.apps.items())
        return f"<AppManager {states}>"

    async def start(self) -> None:
        """Start every app that is not on demand; each becomes ready on its own."""
        if self.guard is not None:
            try:
                await self.guard.start()
            except OSError as exc:
                log.warning("no guard process (%s): apps' own children may outlive a crash", exc)
                self.guard = None
        for managed in self.apps.values():
            if not managed.command.on_demand:
                managed.start()

    async def stop(self, *, now: bool = False) -> None:
        """Stop them all at once: SIGTERM, then SIGKILL after each app's stop_timeout (with
        `now`, SIGKILL at once)."""
        await asyncio.gather(*(managed.stop(now=now) for managed in self.apps.values()))
        for managed in self.apps.values():
            managed.output.close()
        if self.guard is not None:
            await self.guard.close()

    async def ensure_ready(self, app: App) -> errors.UpstreamError | None:
        managed = self.apps.get(app.name)
        return None if managed is None else await managed.ready()

    def in_use(self, app: App) -> contextlib.AbstractContextManager[None]:
        managed = self.apps.get(app.name)
        return contextlib.nullcontext() if managed is None else managed.in_use()


def prepare_socket(path: Path) -> None:
    """The socket's folder exists (0700 when created here) and no stale socket file is in the
    way. Raises StartFailed when something else holds the path."""
    try:
        children.make_private_dir(path.parent)
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartFailed(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(mode):
        raise StartFailed(f"{path} exists and is not a socket; sockgate leaves it alone")
    if children.accepts(path):
        raise StartFailed(f"another process already listens on {path}")
    remove_stale(path)


def remove_stale(path: Path) -> None:
    """Remove a socket file that nothing listens on (left by an app that died)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode) and not children.accepts(path):
            path.unlink()


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"ended by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"ended by signal {-returncode}"
    return f"exited with status {returncode}"
