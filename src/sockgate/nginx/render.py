"""nginx.conf from a Config: a tree of directives, quoted in one function, serialised once.

Pure (layer 1): no files, no processes, no printing. The layout is the reference user-mode setup
(everything under `workdir`, nginx started with `-p`, `-c`, `-e` and `-g 'daemon off;'`) with its
weak points fixed; each fix carries a `#` comment in the output saying why. Here: the main,
events and http contexts and the server that routes by prefix; each app's locations come from
`locations`, which server answers which Host (the 421 guard, the host routes) from `hosts`, and
`checks` refuses first what nginx cannot take. With `[tls]`, the same servers again on the HTTPS
listener, showing one certificate for every configured name (`certs` issues it).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..config import App, Config
from ..units import format_duration
from . import tls
from .checks import check
from .hosts import (
    Listener,
    host_guard,
    host_servers,
    names_hash_bucket_size,
    prefix_server_names,
)
from .locations import NO_APP, app_locations, upstream_name
from .tree import Directive, block, directive, serialise

# The five temporary directories nginx wants; left unset they default to /var/lib/nginx/...
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
UPSTREAM_KEEPALIVE = 32
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# nginx's `combined` format plus the request time and the app, spelled as the built-in engine
# spells them, so one log reader serves both engines.
LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time app=$sockgate_app'
)


class FdLimit(NamedTuple):
    """RLIMIT_NOFILE as sockgate runs under it (None: unlimited): nginx inherits it, and the
    built-in engine, which sets no limit and no connection cap of its own, would hold as many
    connections as its soft limit lets it open."""

    soft: int | None
    hard: int | None


# What a Linux login session usually gets (systemd's defaults); `run` renders with its own.
USUAL_FD_LIMIT = FdLimit(1024, 524288)
# Clients nginx is sized for at most, whatever the limit: each of its connection slots is
# allocated up front (some 420 bytes: 65,536 slots make ~27 MB), and the built-in engine holding
# that many idle connections would itself need some 300 MB.
MAX_CLIENTS = 32768
# Descriptors nginx's worker keeps besides its connections: logs, stdio, epoll, temp files.
NGINX_FILES = 16


def connection_limits(limit: FdLimit) -> tuple[int, int]:
    """(worker_connections, worker_rlimit_nofile) for nginx to hold at least the connections
    the built-in engine would under `limit`: two slots per client (its own and, while
    proxying, the app's; idle pooled app connections take slots too), and a descriptor for each
    slot and for NGINX_FILES, up to the hard limit, which an unprivileged worker cannot raise.
    Bound there, the slots are as many as the descriptors: nginx warns (at every start, and
    `nginx -t` with it) about slots beyond them."""
    clients = MAX_CLIENTS if limit.soft is None else min(limit.soft, MAX_CLIENTS)
    connections = 2 * clients
    nofile = connections + NGINX_FILES
    if limit.hard is not None and nofile > limit.hard:
        nofile = limit.hard
        connections = min(connections, nofile)
    return connections, nofile


# --- paths under workdir ----------------------------------------------------------------------


def conf_path(config: Config) -> Path:
    return config.workdir / "conf" / "nginx.conf"


def pid_path(config: Config) -> Path:
    # Not config.pid_file: that one belongs to sockgate itself, this one to the nginx master.
    return config.workdir / "nginx.pid"


def temp_path(config: Config, name: str) -> Path:
    return config.workdir / "temp" / name


# --- the config -------------------------------------------------------------------------------


def render(
    config: Config,
    *,
    run_as_root: bool = False,
    user: str | None = None,
    fd_limit: FdLimit = USUAL_FD_LIMIT,
    nginx_version: tuple[int, ...] | None = None,
) -> str:
    """nginx.conf for `config`. Raises ConfigError for values nginx cannot take safely.

    `run_as_root` adds a `user` directive for `user` ("name" or "name:group", default root).
    `fd_limit`: the limit nginx will inherit (nginx/run.py passes sockgate's own).
    `nginx_version`: of the nginx that will run it, which spells HTTP/2 its own way (None:
    unknown, the spelling every version takes).
    """
    check(config)
    connections, nofile = connection_limits(fd_limit)
    tree = [
        *_main_context(config, run_as_root=run_as_root, user=user),
        _rlimit(fd_limit, nofile),
        block("events", body=[_worker_connections(connections)]),
        block("http", body=_http(config, nginx_version)),
    ]
    source = _printable(str(config.source)) if config.source else "the command line"
    command = " ".join(command_line(config, conf_path(config)))
    header = (
        f"# Written by sockgate from {source}; edits are lost on the next run.\n"
        f"# It runs this file as: {command} -g 'daemon off;'\n\n"
    )
    return header + serialise(tree)


def command_line(config: Config, conf: Path, nginx: str = "nginx") -> list[str]:
    """nginx's arguments for this workdir. `-e` keeps even the messages nginx writes before it
    has read the config out of /var/log/nginx, which an ordinary user cannot open."""
    return [nginx, "-p", f"{config.workdir}/", "-c", str(conf), "-e", str(config.error_log)]


def _main_context(config: Config, *, run_as_root: bool, user: str | None) -> list[Directive]:
    main = [directive("worker_processes", "1")]
    if run_as_root:
        main.append(
            directive(
                "user",
                *_account("root" if user is None else user),
                comment=(
                    "nginx runs as root: without `user` its workers would drop to `nobody`,\n"
                    "which cannot connect to the app sockets."
                ),
            )
        )
    main += [
        directive("pid", str(pid_path(config))),
        directive(
            "worker_shutdown_timeout",
            _duration(config.timeouts.shutdown),
            comment="A graceful stop lets requests under way finish for timeouts.shutdown.",
        ),
        directive(
            "error_log",
            str(config.error_log),
            "notice",
            comment="notice: also record starts, stops, reloads and the signals behind them.",
        ),
    ]
    return main


def _worker_connections(connections: int) -> Directive:
    return directive(
        "worker_connections",
        str(connections),
        comment=(
            "Two slots per client the built-in engine would hold: its own and, while proxying,\n"
            "the app's. With under 1/16 of its slots free, nginx closes idle keep-alive\n"
            "connections to make room: with the reference's 1024, about a hundred of 1,000\n"
            "idle clients were dropped."
        ),
    )


def _rlimit(limit: FdLimit, nofile: int) -> Directive:
    def spelled(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    capped = limit.soft is None or limit.soft > MAX_CLIENTS
    why = (
        f"sockgate runs with RLIMIT_NOFILE {spelled(limit.soft)} (hard {spelled(limit.hard)}), "
        "which nginx inherits. The built-in engine, with no connection cap of its own, holds as "
        "many client connections as the soft limit allows"
        + (f" (nginx is sized for {MAX_CLIENTS} of them)" if capped else "")
        + ". nginx gets two descriptors per client (its own and, while proxying, the app's) "
        f"and {NGINX_FILES} for its logs and the like, up to the hard limit, which a worker "
        "cannot raise."
    )
    if nofile == limit.hard:
        why += (
            " Held to it, worker_connections is no larger (nginx would warn at every start), so "
            "within the last 1/16 of the limit nginx may close idle keep-alive connections "
            "where the built-in engine would pause accepting; a higher hard limit avoids that."
        )
    return directive("worker_rlimit_nofile", str(nofile), comment=textwrap.fill(why, 92))


def _account(user: str) -> tuple[str, ...]:
    parts = tuple(user.split(":"))
    if len(parts) > 2 or not all(_ACCOUNT.fullmatch(part) for part in parts):
        raise ValueError(f"{user!r}: expected a user name or NAME:GROUP")
    return parts


def _http(config: Config, nginx_version: tuple[int, ...] | None) -> list[Directive]:
    temp_dirs = [directive(f"{name}_temp_path", str(temp_path(config, name))) for name in TEMP_DIRS]
    return [
        directive("log_format", "sockgate", LOG_FORMAT),
        directive("access_log", str(config.access_log), "sockgate"),
        *temp_dirs,
        directive(
            "uninitialized_variable_warn",
            "off",
            comment="Requests refused before routing (400s) log an empty app name, not a warning.",
        ),
        *_client_settings(config),
        *names_hash_bucket_size(config),
        *_proxy_settings(config),
        *_maps(),
        *(_upstream(app) for app in _by_prefix(config.apps)),
        *_servers(config, Listener(str(config.listen))),
        *([] if config.tls is None else tls.servers(config, config.tls, nginx_version, _servers)),
    ]


def _servers(config: Config, listener: Listener) -> list[Directive]:
    """Every server on one listener: the 421 guard (its default server), the server that
    routes by prefix, the host routes."""
    return [
        *host_guard(config, listener),
        block("server", body=_server(config, listener)),
        *host_servers(config, listener),
    ]


# An Upgrade header that offers h2c anywhere in its list (a protocol name, maybe with a version).
H2C_OFFER = r"~*(^|[\s,])h2c(/|[\s,]|$)"


def _maps() -> list[Directive]:
    return [
        block(
            "map",
            "$http_upgrade",
            "$sockgate_upgrade",
            body=[directive("default", "$http_upgrade"), directive(H2C_OFFER, "")],
            comment=(
                "The Upgrade the app is offered: none for h2c. Past a 101 the client would speak\n"
                "HTTP/2 straight to the app, its requests no longer passing this server's routing\n"
                "and Host check (h2c smuggling); an offer of h2c among others is no upgrade\n"
                "either, as in the built-in engine (http/fields.py, offers_h2c)."
            ),
        ),
        block(
            "map",
            "$sockgate_upgrade",
            "$connection_upgrade",
            body=[directive("default", "upgrade"), directive("", "")],
            comment=(
                "An empty Connection header when not upgrading keeps the upstream keepalive\n"
                "pool usable; the reference's `close` opened a new socket per request."
            ),
        ),
        block(
            "map",
            "$http_host",
            "$sockgate_host",
            body=[directive("default", "$http_host"), directive("", "$host")],
            comment=(
                "The Host the client sent, port included. HTTP/1.0 clients may send none;\n"
                "then server_name stands in, since an HTTP/1.1 request to the app needs one."
            ),
        ),
    ]


def _upstream(app: App) -> Directive:
    return block(
        "upstream",
        upstream_name(app),
        body=[
            directive("server", f"unix:{app.socket}"),
            directive("keepalive", str(UPSTREAM_KEEPALIVE)),
        ],
        comment=(
            f"app {app.name}: idle connections are kept open and reused (the reference\n"
            "connected anew for every request)."
        ),
    )


def _client_settings(config: Config) -> list[Directive]:
    """Settings nginx takes from the default server before it knows the Host: they belong to
    the http block, so the 421 guard and the apps' server share them."""
    timeouts = config.timeouts
    return [
        directive("client_header_timeout", _duration(timeouts.client_header)),
        directive("keepalive_timeout", _duration(timeouts.keepalive)),
        directive(
            "send_timeout",
            _duration(timeouts.send),
            comment="timeouts.send also covers a client that stops reading, as built-in does.",
        ),
        directive(
            "merge_slashes",
            "off",
            comment="The app gets the path as the client wrote it; `//` is not folded.",
        ),
    ]


def _server(config: Config, listener: Listener) -> list[Directive]:
    locations = [
        loc
        for app in _by_prefix(config.apps)
        for loc in app_locations(config, app, listener.scheme)
    ]
    if not any(app.prefix == "/" for app in config.apps):
        locations.append(
            block(
                "location",
                "/",
                body=[directive("set", "$sockgate_app", NO_APP), directive("return", "404")],
                comment="No app here. Without this nginx would look for files under <prefix>/html.",
            )
        )
    return [
        *listener.directives(),
        directive("server_name", *prefix_server_names(config)),
        *locations,
    ]


def _proxy_settings(config: Config) -> list[Directive]:
    """Settings every server and location inherits, the prefix server's and the host routes'.
    (proxy_set_header is per location: nginx drops the inherited set as soon as a location sets
    one header of its own.)"""
    timeouts = config.timeouts
    return [
        directive(
            "absolute_redirect",
            "off",
            comment=(
                "Redirects say `Location: /app1/`, not a URL rebuilt from server_name and the\n"
                "listen port, which is wrong as soon as a port is forwarded (docker -p 9000:8080)."
            ),
        ),
        directive("proxy_http_version", "1.1"),
        directive("proxy_buffering", "off"),
        directive("proxy_request_buffering", "off"),
        directive("proxy_cache", "off"),
        directive("proxy_connect_timeout", _duration(timeouts.connect)),
        directive("proxy_read_timeout", _duration(timeouts.read)),
        directive("proxy_send_timeout", _duration(timeouts.send)),
        directive(
            "proxy_buffer_size",
            "256k",
            comment=(
                "With buffering off nginx reads at most this much from the app at a time; the\n"
                "default (one 4k page) moves big downloads in tiny pieces."
            ),
        ),
        directive(
            "proxy_buffers",
            "4",
            "256k",
            comment=(
                "Unused while buffering is off, but nginx -t refuses a proxy_buffer_size that\n"
                "these buffers cannot hold twice over (proxy_busy_buffers_size)."
            ),
        ),
    ]


def _by_prefix(apps: Sequence[App]) -> list[App]:
    # nginx picks the longest prefix whatever the order; this order just reads that way.
    return sorted(apps, key=lambda app: (-len(app.prefix), app.prefix))


def _printable(text: str) -> str:
    # A newline in a file name must not end the comment it is quoted in.
    return text if text.isprintable() else ascii(text)


def _duration(seconds: float) -> str:
    # nginx reads 0 as "no time at all"; the config refuses 0, so keep tiny values above it.
    return format_duration(max(seconds, 0.001))
