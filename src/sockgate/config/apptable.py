"""One `[apps.NAME]` table read into an App, with the Command sockgate runs for it; the apps
checked against one another and against the status page's prefix."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import (
    APP_HOST_PATTERN,
    DEFAULT_HOLD,
    DEFAULT_PREFIX_HEADERS,
    MAX_SOCKET_PATH,
    NAME_PATTERN,
    PREFIX_PATTERN,
    App,
    Command,
    own_host,
)
from .values import Reader, kind_of

START_MODES = ("always", "on-demand")
# Names no app may take as its host: they reach every app by prefix (and *.localhost is every
# app's own NAME.localhost, and the 404 for the others).
PREFIX_ROUTED = frozenset({"localhost", "*.localhost"})
_IP_V4 = re.compile(r"[0-9.]+")
# Prefix header names: letters, digits and '-' (no '_': many servers drop such headers).
_HEADER_NAME = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
# Names a prefix header may not take: hop-by-hop headers, and those sockgate sets itself for
# another purpose (a prefix header of the same name would replace or duplicate them).
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "expect",
    }
)

_APP_KEYS = {
    "socket",
    "prefix",
    "strip_prefix",
    "max_body_size",
    "rewrite",
    "prefix_headers",
    "hold",
    "hosts",
}
COMMAND_KEYS = (
    "command",
    "cwd",
    "env",
    "shell",
    "start",
    "idle_stop",
    "ready_timeout",
    "stop_timeout",
)


class AppReader(Reader):
    """The apps' tables of one source."""

    def app(self, key: str, name: str, raw: Mapping[str, Any], workdir: Path) -> App:
        if not NAME_PATTERN.fullmatch(name):
            raise self.fail(key, f"{name!r}: app names use letters, digits, '_', '.', '-'")
        self.no_unknown(key, raw, _APP_KEYS | set(COMMAND_KEYS))
        if "socket" in raw:
            socket = self.path(f"{key}.socket", raw["socket"], follow_links=False)
        elif "command" in raw:
            socket = workdir / "sockets" / f"{name}.sock"
        else:
            raise self.fail(
                f"{key}.socket",
                "missing: every app needs the path of its socket (or a `command` that sockgate "
                "runs, whose socket defaults to workdir/sockets/<name>.sock)",
            )
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            raise self.fail(
                f"{key}.socket",
                f"{str(socket)!r} is {len(os.fsencode(socket))} bytes; the kernel limit for a "
                f"Unix socket path is {MAX_SOCKET_PATH}: move the socket or use a shorter path",
            )
        prefix = self.string(f"{key}.prefix", raw.get("prefix", f"/{name}/"))
        if not PREFIX_PATTERN.fullmatch(prefix) or any(s in (".", "..") for s in prefix.split("/")):
            raise self.fail(
                f"{key}.prefix",
                f"{prefix!r}: expected a path that starts and ends with '/', such as '/{name}/', "
                "without '.' or '..' segments, '//', '%' or spaces",
            )
        return App(
            name=name,
            socket=socket,
            prefix=prefix,
            strip_prefix=self.boolean(f"{key}.strip_prefix", raw.get("strip_prefix", True)),
            max_body_size=self.opt(raw, "max_body_size", f"{key}.max_body_size", self.size),
            rewrite=self.boolean(f"{key}.rewrite", raw.get("rewrite", True)),
            hold=self.duration(f"{key}.hold", raw.get("hold", DEFAULT_HOLD)),
            prefix_headers=self.prefix_headers(
                f"{key}.prefix_headers", raw.get("prefix_headers", list(DEFAULT_PREFIX_HEADERS))
            ),
            command=self.command(key, raw),
            hosts=self.app_hosts(f"{key}.hosts", raw.get("hosts", [])),
        )

    def app_hosts(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array of host names, got {kind_of(value)} {value!r}")
        names: list[str] = []
        for item in value:
            name = item.lower().rstrip(".") if isinstance(item, str) else None
            if name is None or not APP_HOST_PATTERN.fullmatch(name):
                raise self.fail(
                    key,
                    f"{item!r}: expected a host name without port, such as 'notes.test', or a "
                    "pattern such as '*.notes.localhost'",
                )
            if name in names:
                raise self.fail(key, f"{item!r}: expected each name once")
            if name in PREFIX_ROUTED or _IP_V4.fullmatch(name):
                raise self.fail(
                    key,
                    f"{item!r} is routed by prefix (to every app and the status page): an app's "
                    "host is a name of its own, such as 'notes.localhost' or 'notes.test'",
                )
            names.append(name)
        return tuple(names)

    def prefix_headers(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(
                key, f"expected an array of header names, got {kind_of(value)} {value!r}"
            )
        seen: set[str] = set()
        for item in value:
            if not isinstance(item, str) or not _HEADER_NAME.fullmatch(item):
                raise self.fail(
                    key,
                    f"{item!r}: expected a header name of letters, digits and '-', "
                    "such as 'X-Forwarded-Prefix'",
                )
            if item.lower() in RESERVED_HEADERS:
                raise self.fail(
                    key,
                    f"{item!r}: expected a header of its own, not one that is hop-by-hop or "
                    "that sockgate sets for another purpose (Host, X-Forwarded-For, ...)",
                )
            if item.lower() in seen:
                raise self.fail(key, f"{item!r}: expected each header name once")
            seen.add(item.lower())
        return tuple(value)

    def command(self, key: str, raw: Mapping[str, Any]) -> Command | None:
        if "command" not in raw:
            for name in COMMAND_KEYS:
                if name in raw:
                    raise self.fail(f"{key}.{name}", "only meaningful with `command`")
            return None
        shell = self.boolean(f"{key}.shell", raw.get("shell", False))
        text, argv = self.argv(f"{key}.command", raw["command"], shell)
        start = self.string(f"{key}.start", raw.get("start", "always"))
        if start not in START_MODES:
            raise self.fail(f"{key}.start", f"{start!r}: expected one of {', '.join(START_MODES)}")
        if "idle_stop" in raw and start != "on-demand":
            raise self.fail(f"{key}.idle_stop", 'only meaningful with start = "on-demand"')
        timings = {
            name: self.positive(f"{key}.{name}", raw[name])
            for name in ("idle_stop", "ready_timeout", "stop_timeout")
            if name in raw
        }
        return Command(
            argv=argv,
            text=text,
            cwd=self.directory(f"{key}.cwd", raw.get("cwd", ".")),
            env=self.environment(f"{key}.env", raw.get("env", {})),
            start=start,
            shell=shell,
            **timings,
        )

    def argv(self, key: str, value: object, shell: bool) -> tuple[str, tuple[str, ...]]:
        """The command as written, and the argv to run: a string is split like a shell would
        (shlex) unless `shell`, an array is the argv itself. The placeholders ({socket}, ...)
        stay: `placeholders.fill` substitutes them once the whole config is known."""
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if shell:
                raise self.fail(key, "expected a string with shell = true, got an array")
            return shlex.join(value), tuple(value)
        text = value if isinstance(value, str) else None
        if text is None or not text.strip():
            raise self.fail(key, f"{value!r}: expected a command line or a non-empty array")
        if shell:
            return text, ("/bin/sh", "-c", text)
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise self.fail(key, f"{text!r}: cannot split into arguments: {exc}") from None
        return text, tuple(words)

    def environment(self, key: str, value: object) -> tuple[tuple[str, str], ...]:
        table = self.table(key, value)
        for name, item in table.items():
            if not isinstance(item, str):
                raise self.fail(
                    f"{key}.{name}", f"expected a string, got {kind_of(item)} {item!r} (quote it)"
                )
            if not name or "=" in name or "\0" in name or "\0" in item:
                raise self.fail(f"{key}.{name}", "expected a variable name without '=' or NUL")
        return tuple(table.items())

    def check_apps(
        self, apps: tuple[App, ...], dashboard: str | None = None, host_routes: bool = True
    ) -> tuple[App, ...]:
        seen: dict[str, str] = {}
        owners: dict[str, str] = {}  # host name -> the app served there
        for app in apps:
            own = [own_host(app.name)] if host_routes else []
            if own and own[0] in app.hosts:
                raise self.fail(
                    f"apps.{app.name}.hosts",
                    f"{own[0]!r} is the app's own host already (host_routes): list only others",
                )
            for host in (*own, *app.hosts):
                other = owners.get(host)
                if other is not None and other != app.name:
                    if own and host == own[0]:
                        raise self.fail(
                            f"apps.{app.name}",
                            f"apps {other!r} and {app.name!r} would both be {host!r} (host names "
                            "ignore case): rename one, or set host_routes = false",
                        )
                    raise self.fail(
                        f"apps.{app.name}.hosts",
                        f"{host!r} is already the host of app {other!r}: a host name serves "
                        "one app",
                    )
                owners[host] = app.name
            if dashboard is not None and app.prefix.startswith(dashboard):
                raise self.fail(
                    f"apps.{app.name}.prefix",
                    f"{app.prefix!r} is under {dashboard!r}, the prefix reserved for sockgate's "
                    "status page: pick another prefix, or move the page with "
                    "dashboard = '/other/' (or turn it off with dashboard = false)",
                )
            if app.prefix in seen:
                raise self.fail(
                    f"apps.{app.name}.prefix",
                    f"{app.prefix!r} is already the prefix of app {seen[app.prefix]!r}; "
                    "each app needs its own prefix",
                )
            seen[app.prefix] = app.name
        return apps
