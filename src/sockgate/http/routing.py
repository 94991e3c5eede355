"""Which app a request target belongs to, and the target the app sees. Pure: bytes in, a decision
out."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ..config import LOCAL_SUFFIX, App
from .hosts import hostname

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
    """No app at this path, or (`host`) no app has this *.localhost name."""

    host: str = ""


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
HOSTS_SEEN: Final = 1024  # Host values remembered with the app they name


class Router:
    """First the Host: a request whose Host is one of an app's host names (`hosts`: name to
    app; a "*." name is a pattern) goes to that app at the root of its own origin, whatever the
    path. With `local_hosts` (host_routes), NAME.localhost of a discovered app too, and any
    other *.localhost name is no app's (404, listing the app hosts).

    Then the path: longest prefix wins, whatever the order of the apps in the file. The
    `dashboard` prefix (reserved: no app lives under it) comes before every app, and takes `/`
    if no app does.

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
        hosts: Sequence[tuple[str, App]] = (),
        local_hosts: bool = False,
    ) -> None:
        ordered = sorted(apps, key=lambda app: len(app.prefix), reverse=True)
        self._prefixes = [(app.prefix.encode(), app) for app in ordered]
        self._mounts = {app.mount.encode(): app for app in ordered if app.mount}
        self._dashboard = dashboard.encode() if dashboard else None
        self._discover = discover
        # Only without discovery: what a discovered name routes to changes with the folder.
        self._cache: dict[bytes, Decision] | None = {} if discover is None else None
        self._hosts = HostRoutes(hosts, discover if local_hosts else None, local_hosts)
        self.host_names = [name for name, _ in hosts]

    @property
    def apps(self) -> list[App]:
        return [app for _, app in self._prefixes]

    def route(self, target: bytes, host: bytes | None = None) -> Decision:
        if host is not None and self._hosts.any:
            at_host = self._hosts.app_for(host)
            if at_host is not None:
                if type(at_host) is str:
                    return NotFound(host=at_host)
                assert isinstance(at_host, App)
                return _at_root(at_host, target)
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


def _at_root(app: App, target: bytes) -> Decision:
    """At its own host an app owns every path: nothing stripped, nothing rewritten."""
    if has_dot_segment(target.partition(b"?")[0]):
        return Rejected("the path has '.' or '..' segments")
    return Forward(app, target)


def at_own_host(app: App) -> App:
    """`app` as it is served at its own host: at the root, so neither stripped nor rewritten
    nor told a prefix (`App.prefixed`, `App.rewrites`); the same name, socket and pool."""
    return replace(app, prefix="/")


class HostRoutes:
    """Host header values to the app served at their root, remembered per value (a browser
    sends the same few again and again)."""

    def __init__(
        self,
        hosts: Sequence[tuple[str, App]],
        discover: Callable[[bytes], App | None] | None,
        local: bool,
    ) -> None:
        twins: dict[str, App] = {}
        exact: dict[str, App] = {}
        patterns: list[tuple[str, App]] = []
        for name, app in hosts:
            twin = twins.setdefault(app.name, at_own_host(app))
            if name.startswith("*."):
                patterns.append((name[1:], twin))
            else:
                exact[name] = twin
        self._exact = exact
        self._patterns = sorted(patterns, key=lambda item: len(item[0]), reverse=True)
        self._discover = discover
        self._local = local
        self.any = bool(hosts) or local
        self._seen: dict[bytes, App | str | None] = {}

    def app_for(self, host: bytes) -> App | str | None:
        """The app (at its root) whose host `host` is; the name, for a *.localhost name that is
        no app's; None for any other host (routed by path)."""
        seen = self._seen
        if host in seen:
            return seen[host]
        found, lasting = self._find(host)
        if lasting:
            if len(seen) >= HOSTS_SEEN:
                seen.clear()
            seen[host] = found
        return found

    def _find(self, host: bytes) -> tuple[App | str | None, bool]:
        """The answer, and whether it lasts: a name that discovery was asked about is asked
        again each time (its socket comes and goes)."""
        name = hostname(host)
        if name is None:
            return None, True
        app = self._exact.get(name)
        if app is not None:
            return app, True
        for suffix, twin in self._patterns:
            if name.endswith(suffix):
                return twin, True
        if not self._local or not name.endswith(LOCAL_SUFFIX) or name == LOCAL_SUFFIX[1:]:
            return None, True
        label = name[: -len(LOCAL_SUFFIX)]
        if self._discover is not None and "." not in label:
            discovered = self._discover(label.encode())
            if discovered is not None:
                return at_own_host(discovered), False
            return name, False
        return name, True


def has_dot_segment(path: bytes) -> bool:
    if b"." not in path and b"%" not in path:
        return False  # the common case, without a regex
    return _DOT_SEGMENT.search(_ENCODED_SLASH.sub(b"/", path)) is not None
