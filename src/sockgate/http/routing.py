"""Which app a request target belongs to, and the target the app sees. Pure: bytes in, a decision
out."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ..config import App

# Dot segments, also percent-encoded, and encoded slashes that could make one.
_DOT_SEGMENT: Final = re.compile(rb"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)
_ENCODED_SLASH: Final = re.compile(rb"%2f", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Forward:
    app: App
    target: bytes  # what the app receives: path (stripped or not) and the query, byte-exact


@dataclass(frozen=True, slots=True)
class Redirect:
    location: bytes  # "/app1/" (with the query) for "/app1"


@dataclass(frozen=True, slots=True)
class NotFound:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


@dataclass(frozen=True, slots=True)
class Dashboard:
    """sockgate's own status page: `path` is what follows its prefix ("/", "/status.json"),
    without the query; `at_root` when it answers `/` because no app owns it."""

    path: bytes
    at_root: bool = False


@dataclass(frozen=True, slots=True)
class Misdirected:
    """The Host header names no site of this proxy (DNS rebinding, a stray name): 421. The host
    policy decides it, before the router is asked."""

    title: str
    detail: str


Decision = Forward | Redirect | NotFound | Rejected | Dashboard | Misdirected

# Decisions remembered per target (a page's few URLs come again and again); emptied when full,
# short targets only: at most about half a megabyte.
CACHE_SIZE: Final = 1024
CACHED_TARGET: Final = 256


class Router:
    """Longest prefix wins, whatever the order of the apps in the file. The `dashboard` prefix
    (reserved: no app lives under it) comes before every app, and takes `/` if no app does.

    `discover`, when given, is asked for the app a first path segment names (`b"notes"` for
    `/notes/x`) when no configured prefix at least that long matches: a discovered app is
    /NAME/ and loses to any configured app as long or longer.
    """

    def __init__(
        self,
        apps: Sequence[App],
        dashboard: str | None = None,
        *,
        discover: Callable[[bytes], App | None] | None = None,
    ) -> None:
        ordered = sorted(apps, key=lambda app: len(app.prefix), reverse=True)
        self._prefixes = [(app.prefix.encode(), app) for app in ordered]
        self._mounts = {app.mount.encode(): app for app in ordered if app.mount}
        self._dashboard = dashboard.encode() if dashboard else None
        self._discover = discover
        # Only without discovery: what a discovered name routes to changes with the folder.
        self._cache: dict[bytes, Decision] | None = {} if discover is None else None

    @property
    def apps(self) -> list[App]:
        return [app for _, app in self._prefixes]

    def route(self, target: bytes) -> Decision:
        cache = self._cache
        if cache is None or len(target) > CACHED_TARGET:
            return self._route(target)
        decision = cache.get(target)
        if decision is None:
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            decision = cache[target] = self._route(target)
        return decision

    def _route(self, target: bytes) -> Decision:
        path, sep, query = target.partition(b"?")
        if has_dot_segment(path):
            return Rejected("the path has '.' or '..' segments")
        mount = self._mounts.get(path)
        if mount is not None:
            return Redirect(mount.prefix.encode() + sep + query)
        dashboard = self._dashboard
        if dashboard is not None:
            if path.startswith(dashboard):
                return Dashboard(path[len(dashboard) - 1 :])
            if path == dashboard[:-1]:
                return Redirect(dashboard + sep + query)
        found = self._match(path)
        if self._discover is not None:
            name, slash, _ = path[1:].partition(b"/")
            if name and (found is None or len(found.prefix) < len(name) + 2):
                discovered = self._discover(name)
                if discovered is not None:
                    if not slash:
                        return Redirect(discovered.prefix.encode() + sep + query)
                    found = discovered
        if found is None:
            if dashboard is not None and path == b"/":
                return Dashboard(b"/", at_root=True)
            return NotFound()
        if found.strip_prefix:
            # Keep the prefix's last '/' so the app's path starts with one: no '//' added.
            return Forward(found, target[len(found.prefix) - 1 :])
        return Forward(found, target)

    def _match(self, path: bytes) -> App | None:
        for prefix, app in self._prefixes:
            if path.startswith(prefix):
                return app
        return None


def has_dot_segment(path: bytes) -> bool:
    if b"." not in path and b"%" not in path:
        return False  # the common case, without a regex
    return _DOT_SEGMENT.search(_ENCODED_SLASH.sub(b"/", path)) is not None
