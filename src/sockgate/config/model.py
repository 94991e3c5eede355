"""The config as the rest of sockgate sees it: frozen dataclasses and the limits they keep."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..addresses import is_loopback

# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
# The built-in engine's status page, status.json and event stream live under this prefix.
DEFAULT_DASHBOARD = "/_sockgate/"

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Characters a prefix may hold: unreserved and sub-delims of RFC 3986, no '%' (two spellings of
# one path would route differently) and nothing nginx would need quoted.
PREFIX_PATTERN = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]+/)*")
DEFAULT_PREFIX_HEADERS = ("X-Forwarded-Prefix", "X-Script-Name")
# An app's own host name (`hosts`): DNS labels, lower case, no port; a leading "*." is a pattern
# for every name under it.
APP_HOST_PATTERN = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)
# Every app is also served at the root of NAME.localhost (host_routes): browsers and curl resolve
# any *.localhost name to loopback with no set-up.
LOCAL_SUFFIX = ".localhost"
# How long a request waits for an app whose socket is missing or refuses (it is restarting).
DEFAULT_HOLD = 5.0


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return self.host == "localhost" or is_loopback(self.host)

    @property
    def public_host(self) -> str:
        """The host users reach this address by, as a URL writes it: the address itself
        (IPv6 in brackets), `localhost` for a wildcard."""
        if self.host in ("0.0.0.0", "::", ""):
            return "localhost"
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 3600.0
    send: float = 3600.0
    client_header: float = 60.0
    keepalive: float = 75.0
    shutdown: float = 5.0


@dataclass(frozen=True, slots=True)
class Command:
    """How sockgate runs a supervised app: `command` and the keys that go with it."""

    # Ready for exec once loaded: the placeholders ({socket}, {prefix}, {url}, {host_url})
    # substituted (config/apptable.fill); ("/bin/sh", "-c", ...) if shell.
    argv: tuple[str, ...]
    text: str  # as written in the file, for logs and `check`
    cwd: Path
    env: tuple[tuple[str, str], ...] = ()  # set over sockgate's own environment, substituted
    start: str = "always"  # or "on-demand": on the first request, stopped after idle_stop
    idle_stop: float = 600.0
    ready_timeout: float = 30.0
    stop_timeout: float = 10.0
    shell: bool = False  # argv is ("/bin/sh", "-c", text): placeholders substituted quoted

    @property
    def on_demand(self) -> bool:
        return self.start == "on-demand"

    @property
    def shown(self) -> str:
        """The command as it runs, placeholders substituted, for logs and `check`."""
        if self.argv[:2] == ("/bin/sh", "-c") and len(self.argv) == 3:
            return self.argv[2]
        return shlex.join(self.argv)


# Names the local CA may sign besides those the config adds (`tls.names`): localhost and every
# name under it, IPv4 loopback and ::1. X.509 name constraints bake them into the CA itself.
CA_NAMES = ("localhost",)
CA_NETWORKS = ("127.0.0.0/8", "::1/128")
DEFAULT_TLS_LISTEN = Listen("127.0.0.1", 8443)


@dataclass(frozen=True, slots=True)
class Tls:
    """The HTTPS listener (`[tls]`): with the local CA (`cert` None) or the user's own files."""

    listen: Listen = DEFAULT_TLS_LISTEN
    http2: bool = True
    ca_dir: Path = Path("~/.local/share/sockgate/ca")
    # Extra DNS names the local CA may sign, each with every name under it (`tls.names`).
    names: tuple[str, ...] = ()
    cert: Path | None = None
    key: Path | None = None

    @property
    def local_ca(self) -> bool:
        return self.cert is None

    @property
    def ca_names(self) -> tuple[str, ...]:
        """The DNS names the local CA is constrained to (each with its subdomains)."""
        return (*CA_NAMES, *self.names)


@dataclass(frozen=True, slots=True)
class App:
    name: str
    socket: Path
    prefix: str
    strip_prefix: bool = True
    max_body_size: int | None = None
    hold: float = DEFAULT_HOLD
    # Both only apply with strip_prefix and a prefix other than "/" (see `rewrites`, `prefixed`).
    rewrite: bool = True
    prefix_headers: tuple[str, ...] = DEFAULT_PREFIX_HEADERS
    command: Command | None = None  # supervised: sockgate starts and restarts it
    hosts: tuple[str, ...] = ()  # names it is served at besides NAME.localhost (`hosts`)
    # Worked out once (__post_init__), not as properties: every request asks.
    # The app sees paths without its prefix, and is told the prefix in prefix_headers.
    prefixed: bool = field(init=False, repr=False, compare=False)
    # Location, Refresh and Set-Cookie paths in its responses are moved under the prefix.
    rewrites: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixed = self.strip_prefix and self.prefix != "/"
        object.__setattr__(self, "prefixed", prefixed)
        object.__setattr__(self, "rewrites", self.rewrite and prefixed)

    @property
    def mount(self) -> str:
        """The prefix without its trailing slash: "/app1" for "/app1/", "" for "/"."""
        return self.prefix[:-1]


@dataclass(frozen=True, slots=True)
class Config:
    source: Path | None
    listen: Listen
    workdir: Path
    timeouts: Timeouts = field(default_factory=Timeouts)
    apps: tuple[App, ...] = ()
    max_body_size: int | None = None
    engine: str = "builtin"
    workers: int = 1
    allowed_hosts: tuple[str, ...] = ()
    allow_remote: bool = False
    sockets_dir: Path | None = None  # discovery: every NAME.sock here is served at /NAME/

    # The reserved prefix of the status page (built-in engine); None: turned off.
    dashboard: str | None = DEFAULT_DASHBOARD
    # Every app also at the root of its own origin, http://NAME.localhost:PORT/.
    host_routes: bool = True
    tls: Tls | None = None  # the HTTPS listener beside the plain one (`[tls]`)

    @property
    def supervised(self) -> tuple[App, ...]:
        return tuple(app for app in self.apps if app.command is not None)

    def app_hosts(self, app: App) -> tuple[str, ...]:
        """The host names `app` is served at the root of: NAME.localhost (with host_routes),
        then the names of its `hosts`."""
        return (*([own_host(app.name)] if self.host_routes else []), *app.hosts)

    def host_pairs(self) -> tuple[tuple[str, App], ...]:
        """Every app host name with its app, apps in config order (the order pages list them)."""
        return tuple((name, app) for app in self.apps for name in self.app_hosts(app))

    def route_line(self, app: App, port: int | None = None) -> str:
        """How the start-up log shows an app's route: prefix, socket, name, how it runs, and its
        host URL; `port`: the one listened on, when `listen` says 0."""
        runs = ""
        if app.command is not None:
            runs = ", on demand" if app.command.on_demand else ", supervised"
        host = self.host_url(app, port)
        also = f", also {host}" if host else ""
        return f"{app.prefix} -> {app.socket} ({app.name}{runs}){also}"

    def host_url(self, app: App, port: int | None = None) -> str | None:
        """http://NAME.localhost:PORT/, the app's own origin (None without host_routes);
        `port`: the one listened on, when `listen` says 0."""
        if not self.host_routes:
            return None
        return f"http://{own_host(app.name)}:{port or self.listen.port}/"

    def prefix_url(self, app: App, port: int | None = None) -> str:
        """http://HOST:PORT/PREFIX/, the app under its prefix at the listen address;
        `port`: the one listened on, when `listen` says 0."""
        return f"http://{self.listen.public_host}:{port or self.listen.port}{app.prefix}"

    def urls(
        self, app: App, port: int | None = None, tls_port: int | None = None
    ) -> tuple[str, ...]:
        """Where a user opens `app`: its prefix URL, then its host URL (with host_routes), then
        both over HTTPS (with `[tls]`; `tls_port`: the one listened on, when it says 0)."""
        host = self.host_url(app, port)
        plain = (self.prefix_url(app, port), *([host] if host else []))
        if self.tls is None:
            return plain
        https = self.tls.listen.port if tls_port is None else tls_port
        address = f"https://{self.tls.listen.public_host}:{https}{app.prefix}"
        own = f"https://{own_host(app.name)}:{https}/" if host else None
        return (*plain, address, *([own] if own else []))

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def access_log(self) -> Path:
        return self.logs_dir / "access.log"

    @property
    def error_log(self) -> Path:
        return self.logs_dir / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "sockgate.pid"

    @property
    def control_socket(self) -> Path:
        """The control channel of the built-in engine (`sockgate status`, `stop`): mode 0600."""
        return self.workdir / "sockgate.ctl"

    def body_limit(self, app: App) -> int | None:
        limit = app.max_body_size if app.max_body_size is not None else self.max_body_size
        return limit or None


def own_host(name: str) -> str:
    """NAME.localhost: the host an app named NAME is served at with host_routes."""
    return name.lower() + LOCAL_SUFFIX


def discovered_app(name: str, socket: Path) -> App | None:
    """The app a socket NAME.sock in `sockets_dir` stands for, if NAME is a valid app name."""
    prefix = f"/{name}/"
    if (
        not NAME_PATTERN.fullmatch(name)
        or not PREFIX_PATTERN.fullmatch(prefix)
        or name in (".", "..")
        or len(os.fsencode(socket)) > MAX_SOCKET_PATH
    ):
        return None
    return App(name=name, socket=socket, prefix=prefix)
