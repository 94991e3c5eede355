"""sockgate.toml: parsed once, validated, frozen. Nothing after `load()` sees a raw dict."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from ..units import parse_duration, parse_size
from .model import (
    DEFAULT_DASHBOARD,
    DEFAULT_HOLD,
    DEFAULT_PREFIX_HEADERS,
    MAX_SOCKET_PATH,
    NAME_PATTERN,
    PREFIX_PATTERN,
    App,
    Command,
    Config,
    Listen,
    Timeouts,
)

DEFAULT_FILE = "sockgate.toml"
DEFAULT_LISTEN = "127.0.0.1:8080"
ENGINES = ("builtin", "nginx")
MAX_WORKERS = 64
START_MODES = ("always", "on-demand")
SOCKET_PLACEHOLDER = "{socket}"
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]")
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


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Loader:
    """How the running config was made: the file and the command-line overrides. Kept for the
    life of the process, so a reload reads the same file with the same overrides."""

    path: Path | None = None
    listen: str | None = None
    apps: tuple[str, ...] = ()
    engine: str | None = None
    # False for a config made in code without a file (the demo): nothing to read again.
    reloadable: bool = True

    def load(self) -> Config:
        if not self.reloadable:
            raise ConfigError("started without a config file: there is nothing to read again")
        return load(self.path, listen=self.listen, apps=self.apps, engine=self.engine)

    @classmethod
    def of(cls, config: Config) -> Loader:
        """For a config made without the command line (the demo, tests): its file alone, or,
        without a file, a loader that refuses to reload."""
        return cls(config.source, reloadable=config.source is not None)

    def pinned(self, config: Config) -> Loader:
        """This loader, reading the file `config` came from (the default file is found in the
        current directory once, at start)."""
        if config.source is None:
            return self
        return Loader(config.source, self.listen, self.apps, self.engine)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    listen: str | None = None,
    apps: Sequence[str] = (),
    engine: str | None = None,
) -> Config:
    """Read and validate a config file, then apply command-line overrides.

    With no path, `sockgate.toml` in the current directory is used if it exists; with no file
    at all, `apps` (NAME=SOCKET strings) must name at least one app.
    """
    file = Path(path) if path is not None else Path(DEFAULT_FILE)
    if path is not None or file.exists():
        raw = _read_toml(file)
        reader, source = _Reader(str(file), file.resolve().parent), file.resolve()
    elif apps:
        raw, reader, source = {}, _Reader("--app", Path.cwd()), None
    else:
        raise ConfigError(
            f"no {DEFAULT_FILE} in {Path.cwd()}: run `sockgate init`, pass -c PATH, "
            "or name apps with --app NAME=SOCKET"
        )
    config = reader.config(raw, source)
    config = _apply_overrides(config, listen=listen, apps=apps, engine=engine)
    return _check_engine_support(_check_exposure(config))


def _check_engine_support(config: Config) -> Config:
    """What only the built-in engine in one process can do: it sees every request."""
    source = str(config.source or "command line")
    if config.engine == "nginx" and config.sockets_dir is not None:
        raise ConfigError(
            "discovery is built-in engine only (nginx would need a reload for each new socket): "
            'remove sockets_dir or use engine = "builtin"',
            source=source,
            key="sockets_dir",
        )
    for app in config.supervised:
        assert app.command is not None
        if app.command.on_demand and (config.engine == "nginx" or config.workers > 1):
            where = 'engine = "nginx"' if config.engine == "nginx" else "workers > 1"
            raise ConfigError(
                f"'on-demand': expected 'always' with {where}: starting on the first request "
                "needs the built-in engine in one process (workers = 1), which sees every request",
                source=source,
                key=f"apps.{app.name}.start",
            )
    return config


def _check_exposure(config: Config) -> Config:
    """Apps reachable from the network only on purpose."""
    if config.listen.is_loopback or config.allow_remote:
        return config
    raise ConfigError(
        f"{str(config.listen)!r} is not a loopback address: every app would be reachable from "
        "the network. Listen on 127.0.0.1 or [::1], or set allow_remote = true to mean it",
        source=str(config.source or "command line"),
        key="listen",
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None


def _apply_overrides(
    config: Config, *, listen: str | None, apps: Sequence[str], engine: str | None
) -> Config:
    updates: dict[str, Any] = {}
    cli = _Reader("command line", Path.cwd())
    if listen is not None:
        updates["listen"] = cli.listen("--listen", listen)
    if engine is not None:
        updates["engine"] = cli.engine("--engine", engine)
    if apps:
        by_name = {app.name: app for app in config.apps}
        for spec in apps:
            name, sep, socket = spec.partition("=")
            if not sep or not name or not socket:
                raise ConfigError(f"expected NAME=SOCKET, got {spec!r}", source="--app")
            by_name[name] = cli.app(f"--app {name}", name, {"socket": socket}, config.workdir)
        updates["apps"] = cli.check_apps(tuple(by_name.values()), config.dashboard)
    if not updates:
        return config
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__}
    return Config(**(fields | updates))


class _Reader:
    """Validates one source; every error names it, the dotted key, the value and the expectation."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=key)

    def config(self, raw: Mapping[str, Any], source: Path | None) -> Config:
        known = {
            "listen",
            "workdir",
            "timeouts",
            "apps",
            "max_body_size",
            "engine",
            "workers",
            "allowed_hosts",
            "allow_remote",
            "sockets_dir",
            "dashboard",
        }
        self.no_unknown("", raw, known)
        workdir = self.path("workdir", raw.get("workdir", "."))
        apps_raw = self.table("apps", raw.get("apps", {}))
        apps = tuple(
            self.app(f"apps.{name}", name, self.table(f"apps.{name}", body), workdir)
            for name, body in apps_raw.items()
        )
        sockets_dir = None
        if "sockets_dir" in raw:
            sockets_dir = _Reader(self.source, workdir).path("sockets_dir", raw["sockets_dir"])
        dashboard = self.dashboard("dashboard", raw.get("dashboard", DEFAULT_DASHBOARD))
        return Config(
            source=source,
            listen=self.listen("listen", raw.get("listen", DEFAULT_LISTEN)),
            workdir=workdir,
            sockets_dir=sockets_dir,
            timeouts=self.timeouts(self.table("timeouts", raw.get("timeouts", {}))),
            apps=self.check_apps(apps, dashboard),
            dashboard=dashboard,
            max_body_size=self.opt(raw, "max_body_size", "max_body_size", self.size),
            engine=self.engine("engine", raw.get("engine", "builtin")),
            workers=self.workers("workers", raw.get("workers", 1)),
            allowed_hosts=self.hosts("allowed_hosts", raw.get("allowed_hosts", [])),
            allow_remote=self.boolean("allow_remote", raw.get("allow_remote", False)),
        )

    def hosts(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array of host names, got {_kind(value)} {value!r}")
        for item in value:
            if not isinstance(item, str) or not _HOST_PATTERN.fullmatch(item):
                raise self.fail(
                    key,
                    f"{item!r}: expected a host name such as 'myhost.example', a pattern such "
                    "as '*.example.test', an address such as '192.168.1.5' or '[fd00::1]', or '*'",
                )
        return tuple(value)

    def workers(self, key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
            raise self.fail(key, f"{value!r}: expected a whole number from 1 to {MAX_WORKERS}")
        return value

    def no_unknown(self, where: str, raw: Mapping[str, Any], known: set[str]) -> None:
        for key in raw:
            if key not in known:
                dotted = f"{where}.{key}" if where else key
                expected = ", ".join(sorted(known))
                raise self.fail(dotted, f"unknown key (expected one of: {expected})")

    def table(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)} {value!r}")
        return value

    def string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)} {value!r}")
        return value

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)} {value!r}")
        return value

    def size(self, key: str, value: object) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.fail(key, f"{value!r}: {exc}") from None

    def duration(self, key: str, value: object) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, f"{value!r}: {exc}") from None

    def opt(
        self, raw: Mapping[str, Any], name: str, key: str, conv: Callable[[str, object], T]
    ) -> T | None:
        return conv(key, raw[name]) if name in raw else None

    def path(self, key: str, value: object, *, follow_links: bool = True) -> Path:
        text = self.string(key, value)
        if not text or "\0" in text:
            raise self.fail(key, f"{text!r}: expected a path")
        path = self.base / Path(text).expanduser()
        # A socket path may be a link that a deploy swaps: keep the link, only make it absolute.
        return path.resolve() if follow_links else Path(os.path.abspath(path))

    def engine(self, key: str, value: object) -> str:
        text = self.string(key, value)
        if text not in ENGINES:
            raise self.fail(key, f"{text!r}: expected one of {', '.join(ENGINES)}")
        return text

    def listen(self, key: str, value: object) -> Listen:
        text = self.string(key, value).strip()
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text)
        if match is None:
            raise self.fail(key, f"{text!r}: expected HOST:PORT or [IPV6]:PORT")
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        if not 0 <= port <= 65535:
            # 0 asks the kernel for a free port; the bound port is logged at startup.
            raise self.fail(key, f"{text!r}: port must be between 0 and 65535")
        if match.group(1):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise self.fail(key, f"{text!r}: {host!r} is not an IPv6 address") from None
        return Listen(host, port)

    def timeouts(self, raw: Mapping[str, Any]) -> Timeouts:
        names = set(Timeouts.__dataclass_fields__)
        self.no_unknown("timeouts", raw, names)
        values = {name: self.duration(f"timeouts.{name}", raw[name]) for name in raw}
        for name, seconds in values.items():
            if seconds == 0:
                raise self.fail(f"timeouts.{name}", f"{raw[name]!r}: must be greater than zero")
        return Timeouts(**values)

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
            command=self.command(key, raw, socket),
        )

    def prefix_headers(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array of header names, got {_kind(value)} {value!r}")
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

    def command(self, key: str, raw: Mapping[str, Any], socket: Path) -> Command | None:
        if "command" not in raw:
            for name in COMMAND_KEYS:
                if name in raw:
                    raise self.fail(f"{key}.{name}", "only meaningful with `command`")
            return None
        shell = self.boolean(f"{key}.shell", raw.get("shell", False))
        text, argv = self.argv(f"{key}.command", raw["command"], shell, socket)
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
            **timings,
        )

    def argv(
        self, key: str, value: object, shell: bool, socket: Path
    ) -> tuple[str, tuple[str, ...]]:
        """The command as written, and the argv to run: a string is split like a shell would
        (shlex) unless `shell`, an array is the argv itself; {socket} is the app's socket."""
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if shell:
                raise self.fail(key, "expected a string with shell = true, got an array")
            argv = [arg.replace(SOCKET_PLACEHOLDER, str(socket)) for arg in value]
            return shlex.join(value), tuple(argv)
        text = value if isinstance(value, str) else None
        if text is None or not text.strip():
            raise self.fail(key, f"{value!r}: expected a command line or a non-empty array")
        if shell:
            return text, (
                "/bin/sh",
                "-c",
                text.replace(SOCKET_PLACEHOLDER, shlex.quote(str(socket))),
            )
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise self.fail(key, f"{text!r}: cannot split into arguments: {exc}") from None
        return text, tuple(word.replace(SOCKET_PLACEHOLDER, str(socket)) for word in words)

    def directory(self, key: str, value: object) -> Path:
        path = self.path(key, value)
        if not path.is_dir():
            raise self.fail(key, f"{str(path)!r}: expected an existing directory")
        return path

    def environment(self, key: str, value: object) -> tuple[tuple[str, str], ...]:
        table = self.table(key, value)
        for name, item in table.items():
            if not isinstance(item, str):
                raise self.fail(
                    f"{key}.{name}", f"expected a string, got {_kind(item)} {item!r} (quote it)"
                )
            if not name or "=" in name or "\0" in name or "\0" in item:
                raise self.fail(f"{key}.{name}", "expected a variable name without '=' or NUL")
        return tuple(table.items())

    def positive(self, key: str, value: object) -> float:
        seconds = self.duration(key, value)
        if seconds == 0:
            raise self.fail(key, f"{value!r}: must be greater than zero")
        return seconds

    def dashboard(self, key: str, value: object) -> str | None:
        if value is False:
            return None
        if value is True:
            return DEFAULT_DASHBOARD
        if (
            not isinstance(value, str)
            or value == "/"
            or not PREFIX_PATTERN.fullmatch(value)
            or any(s in (".", "..") for s in value.split("/"))
        ):
            raise self.fail(
                key,
                f"{value!r}: expected a prefix of its own such as '{DEFAULT_DASHBOARD}' (starts "
                "and ends with '/', not '/' itself, no '.' or '..' segments, '//', '%' or "
                "spaces), or false to turn the status page off",
            )
        return value

    def check_apps(self, apps: tuple[App, ...], dashboard: str | None = None) -> tuple[App, ...]:
        seen: dict[str, str] = {}
        for app in apps:
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


def _kind(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "table" if isinstance(value, dict) else type(value).__name__
    )
