"""What every command shares: the config options, loading, and known errors turned into one
line on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config
from ..errors import ConfigError, NginxConfigRejected, SockgateError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INVALID = 1
EXIT_ERROR = 2
EXIT_FOUND = 1  # `lint`: something escapes its prefix


def config_options(func: F) -> F:
    func = click.option(
        "--engine",
        type=click.Choice(config.ENGINES),
        help="Override `engine`: the built-in asyncio engine or user-mode nginx.",
    )(func)
    return source_options(func)


def source_options(func: F) -> F:
    func = click.option(
        "--app",
        "apps",
        multiple=True,
        metavar="NAME=SOCKET",
        help="Route /NAME/ to SOCKET (repeatable); works without a config file.",
    )(func)
    func = click.option("--listen", metavar="HOST:PORT", help="Override `listen`.")(func)
    return config_option("Config file (default: ./sockgate.toml).")(func)


def config_option(help: str) -> Callable[[F], F]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=help,
    )


def handle_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"sockgate: config error: {exc}", err=True)
            sys.exit(EXIT_INVALID)
        except NginxConfigRejected as exc:
            click.echo(f"sockgate: {exc}", err=True)
            sys.exit(EXIT_INVALID)
        except SockgateError as exc:
            click.echo(f"sockgate: {exc}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def load(
    config_path: Path | None, listen: str | None, apps: tuple[str, ...], engine: str | None = None
) -> config.Config:
    return config.load(config_path, listen=listen, apps=apps, engine=engine)
