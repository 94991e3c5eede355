"""sockgate.toml: parsed once, validated, frozen. Nothing after `load()` sees a raw dict."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import placeholders
from .apptable import AppReader
from .model import DEFAULT_DASHBOARD, PREFIX_PATTERN, Config, Listen, Timeouts
from .tlstable import read_tls
from .values import kind_of

DEFAULT_FILE = "sockgate.toml"
DEFAULT_LISTEN = "127.0.0.1:8080"
ENGINES = ("builtin", "nginx")
MAX_WORKERS = 64
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]")


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
    return _check_engine_support(_check_exposure(placeholders.fill(config)))


def bare(workdir: Path) -> Config:
    """A config with no file and no apps, for what only needs to know where a sockgate keeps
    its things (its control socket, pid file and logs): one started with `--app` alone."""
    return Config(
        source=None,
        listen=_Reader("default", workdir).listen("listen", DEFAULT_LISTEN),
        workdir=workdir,
    )


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
    if config.tls is not None and config.tls.listen.port == 0 and config.workers > 1:
        raise ConfigError(
            "port 0: expected a port number with workers > 1 (each worker listens there, so "
            "they must agree on one port)",
            source=source,
            key="tls.listen",
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
    """Apps reachable from the network only on purpose, over either listener."""
    listeners = [("listen", config.listen)]
    if config.tls is not None:
        listeners.append(("tls.listen", config.tls.listen))
    for key, listen in listeners:
        if not (listen.is_loopback or config.allow_remote):
            raise ConfigError(
                f"{str(listen)!r} is not a loopback address: every app would be reachable from "
                "the network. Listen on 127.0.0.1 or [::1], or set allow_remote = true to mean it",
                source=str(config.source or "command line"),
                key=key,
            )
    tls = config.tls
    if tls is not None and tls.listen.port and tls.listen == config.listen:
        raise ConfigError(
            f"{str(tls.listen)!r} is also the plain listener's address: give HTTPS a port of "
            "its own (the default is 8443)",
            source=str(config.source or "command line"),
            key="tls.listen",
        )
    return config


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
        updates["apps"] = cli.check_apps(
            tuple(by_name.values()), config.dashboard, config.host_routes
        )
    if not updates:
        return config
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__}
    return Config(**(fields | updates))


class _Reader(AppReader):
    """The top level of one source: the keys and tables around the apps."""

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
            "host_routes",
            "tls",
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
        host_routes = self.boolean("host_routes", raw.get("host_routes", True))
        tls = None
        if "tls" in raw:
            tls = read_tls(self, self.table("tls", raw["tls"]), workdir, self.listen)
        return Config(
            source=source,
            listen=self.listen("listen", raw.get("listen", DEFAULT_LISTEN)),
            workdir=workdir,
            sockets_dir=sockets_dir,
            timeouts=self.timeouts(self.table("timeouts", raw.get("timeouts", {}))),
            apps=self.check_apps(apps, dashboard, host_routes),
            dashboard=dashboard,
            host_routes=host_routes,
            max_body_size=self.opt(raw, "max_body_size", "max_body_size", self.size),
            engine=self.engine("engine", raw.get("engine", "builtin")),
            workers=self.workers("workers", raw.get("workers", 1)),
            allowed_hosts=self.hosts("allowed_hosts", raw.get("allowed_hosts", [])),
            allow_remote=self.boolean("allow_remote", raw.get("allow_remote", False)),
            tls=tls,
        )

    def hosts(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array of host names, got {kind_of(value)} {value!r}")
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
