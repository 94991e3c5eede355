"""`sockets_dir`: every NAME.sock in one folder is an app at /NAME/, without a config entry.

Nothing is cached that could go stale: the router asks `lookup` when a request's first path
segment could name a discovered app, and lookup looks at the folder (one stat). A socket that
appears is routed from the very next request; one that disappears gets 404 from then on.
Explicit apps win: a name or prefix the config already uses is never discovered.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..config import App, Config, discovered_app
from .children import make_private_dir

log = logging.getLogger(__name__)

SUFFIX = ".sock"


class Discovery:
    def __init__(self, directory: Path, explicit: Sequence[App]) -> None:
        self.directory = directory
        self._taken = {app.name for app in explicit} | {app.prefix[1:-1] for app in explicit}
        self._sockets = {app.socket for app in explicit}
        self._known: dict[str, App] = {}  # discovered and still there: logged once

    def __repr__(self) -> str:
        return f"<Discovery {self.directory} known={sorted(self._known)}>"

    def lookup(self, segment: bytes) -> App | None:
        """The discovered app named by a path's first segment, if its socket is there now."""
        try:
            name = segment.decode("ascii")
        except UnicodeDecodeError:
            return None
        if name in self._taken:
            return None
        path = self.directory / f"{name}{SUFFIX}"
        try:
            is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
        except (OSError, ValueError):
            is_socket = False
        if not is_socket:
            if self._known.pop(name, None) is not None:
                log.info("app %s is gone: %s was removed", name, path)
            return None
        app = self._known.get(name)
        if app is None:
            app = discovered_app(name, path)
            if app is None or app.socket in self._sockets:
                return None
            self._known[name] = app
            log.info("discovered app %s at %s -> %s", name, app.prefix, path)
        return app

    def scan(self) -> list[App]:
        """Every app the folder holds now, by name (for `check` and the 404 page)."""
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError:
            return []
        found = []
        for entry in entries:
            if entry.endswith(SUFFIX):
                app = self.lookup(entry.removesuffix(SUFFIX).encode("ascii", "replace"))
                if app is not None:
                    found.append(app)
        return found


def prepare_discovery(config: Config) -> None:
    """The folder discovery watches exists (0700 when created here), so sockets can appear."""
    if config.sockets_dir is not None:
        try:
            make_private_dir(config.sockets_dir)
        except OSError as exc:
            log.warning("cannot create sockets_dir %s: %s", config.sockets_dir, exc.strerror)
