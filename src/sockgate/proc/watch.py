"""`run --watch`: a change to the config file becomes a SIGHUP to this process (layer 4).

The watcher is a thread that asks watchfiles (inotify on Linux, via Rust's `notify`) about the
file's directory and filters the file itself: editors replace a file by writing another and
renaming it over, which a watch on the file alone would lose after the first save. Changes are
debounced (one save is several events). Each batch sends SIGHUP to this process, so an edit is
reloaded exactly as `kill -HUP` or `sockgate reload` is, by whichever process model runs (the
built-in engine's event loop, the workers' supervisor, the nginx runner): they all already wait
for signals, and none of them has to learn a second way to be told.

Start it after the process handles (or blocks, to wait for) SIGHUP: its default action ends the
process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import SockgateError

if TYPE_CHECKING:
    import watchfiles

log = logging.getLogger(__name__)

# One save is several events (write, rename, chmod): they are gathered for this long.
DEBOUNCE_MS = 200
# How often the thread looks at its stop flag.
STEP_MS = 50


class ConfigWatcher:
    """`with ConfigWatcher(path):` sends SIGHUP to this process when `path` changes."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sockgate-watch", daemon=True)

    def __repr__(self) -> str:
        return f"<ConfigWatcher {self.path} alive={self._thread.is_alive()}>"

    def __enter__(self) -> ConfigWatcher:
        self._thread.start()
        log.info("watching %s: a change reloads the config", self.path)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def _is_ours(self, change: watchfiles.Change, path: str) -> bool:
        return change.name != "deleted" and os.path.basename(path) == self.path.name

    def _run(self) -> None:
        # Imported here: watchfiles brings anyio, megabytes a sockgate without --watch never uses.
        import watchfiles

        try:
            for _ in watchfiles.watch(
                self.path.parent,
                watch_filter=self._is_ours,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._stop,
                recursive=False,
                raise_interrupt=False,
            ):
                log.debug("%s changed: reloading", self.path)
                os.kill(os.getpid(), signal.SIGHUP)
        except (OSError, RuntimeError) as exc:
            log.error("cannot watch %s any more: %s; reload with SIGHUP", self.path, exc)


def watching(config: Config) -> ConfigWatcher:
    """The watcher behind `run --watch`; refused when there is no file to watch."""
    if config.source is None:
        raise SockgateError("--watch needs a config file (apps given with --app only)")
    return ConfigWatcher(config.source)
