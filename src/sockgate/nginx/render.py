"""nginx.conf from a Config: a tree of directives, quoted in one function, serialised once.

Pure (layer 1): no files, no processes, no printing. The layout is the reference user-mode setup
(everything under `workdir`, nginx started with `-p`, `-c`, `-e` and `-g 'daemon off;'`) with its
weak points fixed; each fix carries a `#` comment in the output saying why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..config import DEFAULT_PREFIX_HEADERS, App, Config
from ..errors import ConfigError
from ..units import format_duration
from .tree import Directive, block, directive, serialise

# The five temporary directories nginx wants; left unset they default to /var/lib/nginx/...
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
UPSTREAM_KEEPALIVE = 32
# The app name for requests no app served (not a valid app name, so never ambiguous).
NO_APP = "-"
_MISDIRECTED = (
    "421 Misdirected Request: sockgate answers only local names (localhost, *.localhost, "
    "127.0.0.0/8, [::1]) and those listed in allowed_hosts (DNS rebinding protection).\n"
)

# In a path nginx would read these as syntax or (`$`) as a variable it cannot escape; a path that
# holds one is refused rather than quoted, so every path in the file means exactly itself.
_UNSAFE_IN_PATH = re.compile(r"[\s;{}\"'\\#$]|[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# nginx's `combined` format plus the request time and the app, spelled as the built-in engine
# spells them, so one log reader serves both engines.
LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time app=$sockgate_app'
)


# --- paths under workdir ----------------------------------------------------------------------


def conf_path(config: Config) -> Path:
    return config.workdir / "conf" / "nginx.conf"


def pid_path(config: Config) -> Path:
    # Not config.pid_file: that one belongs to sockgate itself, this one to the nginx master.
    return config.workdir / "nginx.pid"


def temp_path(config: Config, name: str) -> Path:
    return config.workdir / "temp" / name


def upstream_name(app: App) -> str:
    return f"sockgate_{app.name}"


# --- the config -------------------------------------------------------------------------------


def render(config: Config, *, run_as_root: bool = False, user: str | None = None) -> str:
    """nginx.conf for `config`. Raises ConfigError for values nginx cannot take safely.

    `run_as_root` adds a `user` directive for `user` ("name" or "name:group", default root).
    """
    _check(config)
    tree = [
        *_main_context(config, run_as_root=run_as_root, user=user),
        block("events", body=[directive("worker_connections", "1024")]),
        block("http", body=_http(config)),
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


def _account(user: str) -> tuple[str, ...]:
    parts = tuple(user.split(":"))
    if len(parts) > 2 or not all(_ACCOUNT.fullmatch(part) for part in parts):
        raise ValueError(f"{user!r}: expected a user name or NAME:GROUP")
    return parts


def _http(config: Config) -> list[Directive]:
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
        *_maps(),
        *(_upstream(app) for app in _by_prefix(config.apps)),
        *_host_guard(config),
        block("server", body=_server(config)),
    ]


def _host_guard(config: Config) -> list[Directive]:
    """A default server that answers 421 to Host values that are not local or allowed."""
    if "*" in config.allowed_hosts:
        return []
    return [
        block(
            "server",
            body=[
                directive("listen", str(config.listen), "default_server"),
                directive("server_name", "_"),
                directive("set", "$sockgate_app", NO_APP),
                directive("return", "421", _MISDIRECTED),
            ],
            comment=(
                "Only local names and allowed_hosts reach the apps: a web page that rebinds\n"
                "its own name to 127.0.0.1 still sends its own Host, and lands here."
            ),
        )
    ]


def _server_names(config: Config) -> list[str]:
    names = ["localhost", "*.localhost", r"~^127\.\d+\.\d+\.\d+$", "[::1]"]
    host = config.listen.host
    if host not in ("0.0.0.0", "::"):
        names.append(f"[{host}]" if ":" in host else host)
    return names + [h for h in config.allowed_hosts if h not in names and h != "*"]


def _maps() -> list[Directive]:
    return [
        block(
            "map",
            "$http_upgrade",
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


def _server(config: Config) -> list[Directive]:
    locations = [loc for app in _by_prefix(config.apps) for loc in _locations(config, app)]
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
        directive("listen", str(config.listen)),
        directive("server_name", *_server_names(config)),
        directive(
            "absolute_redirect",
            "off",
            comment=(
                "Redirects say `Location: /app1/`, not a URL rebuilt from server_name and the\n"
                "listen port, which is wrong as soon as a port is forwarded (docker -p 9000:8080)."
            ),
        ),
        *_proxy_settings(config),
        *locations,
    ]


def _proxy_settings(config: Config) -> list[Directive]:
    """Settings every location inherits. (proxy_set_header is per location: nginx drops the
    inherited set as soon as a location sets one header of its own.)"""
    timeouts = config.timeouts
    return [
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


def _locations(config: Config, app: App) -> list[Directive]:
    # Stripping "/" from "/" changes nothing; without a URI part nginx also forwards the path
    # exactly as the client wrote it instead of its normalised form.
    strip = app.prefixed
    upstream = f"http://{upstream_name(app)}" + ("/" if strip else "")
    body = [
        directive("set", "$sockgate_app", app.name),
        directive("proxy_pass", upstream),
        *_headers(app, strip),
        *_rewrites(app),
        directive(
            "client_max_body_size",
            _size(config.body_limit(app) or 0),
            comment="From the config; 0 is unlimited. nginx's default, 1m, silently caps uploads.",
        ),
    ]
    path = "prefix stripped" if strip else "path unchanged"
    about = f"app {app.name}: {app.prefix} -> unix:{app.socket} ({path})"
    if app.prefix == "/":
        return [block("location", app.prefix, body=body, comment=about)]
    redirect = block(
        "location",
        "=",
        app.mount,
        body=[
            directive("set", "$sockgate_app", app.name),
            directive("return", "301", f"{app.prefix}$is_args$args"),
        ],
        comment=f"{about}\n{app.mount} itself is redirected to {app.prefix}, query kept.",
    )
    return [redirect, block("location", app.prefix, body=body)]


def _headers(app: App, strip: bool) -> list[Directive]:
    def header(name: str, value: str, comment: str = "") -> Directive:
        return directive("proxy_set_header", name, value, comment=comment)

    return [
        header(
            "Host",
            "$sockgate_host",
            comment="The reference's $host drops the port, and Jupyter then refuses the browser.",
        ),
        header("X-Real-IP", "$remote_addr"),
        header("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        header("X-Forwarded-Proto", "$scheme"),
        header("X-Forwarded-Host", "$sockgate_host"),
        *_prefix_headers(app, strip),
        header("Upgrade", "$http_upgrade"),
        header("Connection", "$connection_upgrade"),
    ]


def _prefix_headers(app: App, strip: bool) -> list[Directive]:
    """The stripped prefix in each of prefix_headers; the others set empty, which nginx does not
    send: a client's own copy is dropped instead of passed on."""
    told = app.prefix_headers if strip else ()
    silent = [name for name in (*DEFAULT_PREFIX_HEADERS, *app.prefix_headers) if name not in told]
    silent = list(dict.fromkeys(silent))
    comment = "The part of the path that was stripped, in each of prefix_headers."
    empty = (
        "Empty: not sent, and a client's own copy is dropped."
        if strip
        else "Nothing is stripped; an empty value also drops one the client sent."
    )
    return [
        *(
            directive("proxy_set_header", name, app.mount, comment=comment if i == 0 else "")
            for i, name in enumerate(told)
        ),
        *(
            directive("proxy_set_header", name, "", comment=empty if i == 0 else "")
            for i, name in enumerate(silent)
        ),
    ]


def _rewrites(app: App) -> list[Directive]:
    """The closest nginx has to rewrite.py: Location/Refresh and cookie paths under the prefix."""
    if not app.rewrites:
        return [
            directive(
                "proxy_redirect",
                "off",
                comment="Location and Refresh headers pass unchanged (rewrite = false or nothing "
                "stripped).",
            )
        ]
    mount = app.mount
    # Root-relative, not scheme-relative (`//`), not already under the prefix (`/app10` is not).
    outside = f"^/(?!/|{_pcre(mount[1:])}(?:[/?#]|$))(.*)$"
    own = "http://$http_host"
    return [
        directive(
            "proxy_redirect",
            f"~{outside}",
            f"{mount}/$1",
            comment=(
                "Location and Refresh: a root-relative target goes under the prefix, once.\n"
                "The first proxy_redirect that matches applies."
            ),
        ),
        directive(
            "proxy_redirect",
            f"{own}{mount}",
            f"{own}{mount}",
            comment="An absolute URL to this origin already under the prefix stays as it is...",
        ),
        directive(
            "proxy_redirect",
            f"{own}/",
            f"{own}{mount}/",
            comment="...one outside it gets the prefix.",
        ),
        directive(
            "proxy_cookie_path",
            f"~^/(?!{_pcre(mount[1:])}(?:/|$))(.*)$",
            f"{mount}/$1",
            comment="Set-Cookie: Path=/ becomes the prefix, Path=/x goes under it, once.",
        ),
    ]


def _pcre(text: str) -> str:
    """`text` as a literal in a PCRE pattern (a prefix never holds `$`: _check refuses it)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def _by_prefix(apps: Sequence[App]) -> list[App]:
    # nginx picks the longest prefix whatever the order; this order just reads that way.
    return sorted(apps, key=lambda app: (-len(app.prefix), app.prefix))


def _size(size: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _printable(text: str) -> str:
    # A newline in a file name must not end the comment it is quoted in.
    return text if text.isprintable() else ascii(text)


def _duration(seconds: float) -> str:
    # nginx reads 0 as "no time at all"; the config refuses 0, so keep tiny values above it.
    return format_duration(max(seconds, 0.001))


# --- what nginx cannot take -------------------------------------------------------------------


def _check(config: Config) -> None:
    source = str(config.source) if config.source else ""
    _check_path(config.workdir, "workdir", source)
    _check_listen(config, source)
    upstreams: dict[str, str] = {}
    for app in config.apps:
        _check_path(app.socket, f"apps.{app.name}.socket", source)
        if "$" in app.prefix:
            raise ConfigError(
                f"{app.prefix!r}: nginx would read '$' as the start of a variable in the "
                "redirect and the X-Forwarded-Prefix header; choose a prefix without '$'",
                source=source,
                key=f"apps.{app.name}.prefix",
            )
        # nginx compares upstream names without regard to case.
        other = upstreams.setdefault(app.name.lower(), app.name)
        if other != app.name:
            raise ConfigError(
                f"{app.name!r} and {other!r} differ only in case, which nginx cannot tell "
                "apart; rename one of them",
                source=source,
                key=f"apps.{app.name}",
            )


def _check_path(path: Path, key: str, source: str) -> None:
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{text!r} is not valid UTF-8, and nginx.conf is a UTF-8 file; rename it",
            source=source,
            key=key,
        ) from None
    bad = _UNSAFE_IN_PATH.search(text)
    if bad is not None:
        raise ConfigError(
            f"{text!r} contains {bad.group()!r}, which the nginx engine does not write into "
            "nginx.conf (whitespace, quotes, ';', '{', '}', '#', '\\' and '$' are refused); "
            "use a path without it",
            source=source,
            key=key,
        )
    if not path.is_absolute():
        raise ConfigError(f"{text!r}: expected an absolute path", source=source, key=key)


def _check_listen(config: Config, source: str) -> None:
    host = config.listen.host
    if ":" not in host and not _HOSTNAME.fullmatch(host):
        raise ConfigError(
            f"{str(config.listen)!r}: {host!r} is not an IP address or host name nginx can "
            "listen on",
            source=source,
            key="listen",
        )
