"""The placeholders of a supervised app's `command` and `env`: {socket}, {prefix}, {url} and
{host_url}, substituted once the whole config is known (the apps are read before `listen` and
`host_routes`, and `--listen` may override the file's)."""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable, Mapping

from ..errors import ConfigError
from .model import App, Config

NAMES = ("socket", "prefix", "url", "host_url")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(NAMES) + r")\}")


def fill(config: Config) -> Config:
    """`config` with each supervised app's argv and env substituted; `Command.text` stays as
    written. A placeholder with no value here ({host_url} with host_routes = false, {url} or
    {host_url} while `listen` says port 0) is a ConfigError naming the key."""
    if not config.supervised:
        return config
    apps = tuple(_fill_app(config, app) for app in config.apps)
    return dataclasses.replace(config, apps=apps)


def values(config: Config, app: App) -> dict[str, str | None]:
    """What each placeholder stands for in `app`'s command (None: no value in this config)."""
    port = config.listen.port or None
    return {
        "socket": str(app.socket),
        "prefix": app.prefix,
        "url": config.prefix_url(app) if port else None,
        "host_url": config.host_url(app) if port else None,
    }


def _fill_app(config: Config, app: App) -> App:
    command = app.command
    if command is None:
        return app
    known = values(config, app)
    key = f"apps.{app.name}"

    def substitute(where: str, text: str, quote: Callable[[str], str] = str) -> str:
        return _PLACEHOLDER.sub(lambda m: quote(_value(config, key, where, known, m[1])), text)

    if command.shell:
        argv = (*command.argv[:2], substitute("command", command.argv[2], shlex.quote))
    else:
        argv = tuple(substitute("command", word) for word in command.argv)
    env = tuple((name, substitute(f"env.{name}", value)) for name, value in command.env)
    filled = dataclasses.replace(command, argv=argv, env=env)
    return dataclasses.replace(app, command=filled)


def _value(config: Config, key: str, where: str, known: Mapping[str, str | None], name: str) -> str:
    value = known[name]
    if value is not None:
        return value
    if name == "host_url" and not config.host_routes:
        why = (
            "host_routes = false gives the app no host URL of its own: turn host_routes on, "
            "or use {url} (its prefix URL)"
        )
    else:
        why = (
            f"listen = {str(config.listen)!r} asks the kernel for a free port, known only once "
            "sockgate runs: give listen a port"
        )
    raise ConfigError(
        f"{{{name}}} has no value: {why}",
        source=str(config.source or "command line"),
        key=f"{key}.{where}",
    )
