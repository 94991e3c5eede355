"""The `sockgate` command. Each command loads the config, calls one function, and turns known
errors into one line on stderr and an exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, config
from .buildinfo import build
from .config import scaffold
from .errors import ConfigError, NginxConfigRejected, SockgateError
from .lint import MAX_PAGES
from .proc import pidfile, workers
from .proc.logsetup import configure
from .status import control, dashboard, probe

# The lint and nginx commands' modules are imported by those commands: `sockgate run` on the
# built-in engine would otherwise hold them (and html.parser) for as long as it runs.

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INVALID = 1
EXIT_ERROR = 2
EXIT_FOUND = 1  # `lint`: something escapes its prefix


def _config_options(func: F) -> F:
    func = click.option(
        "--engine",
        type=click.Choice(config.ENGINES),
        help="Override `engine`: the built-in asyncio engine or user-mode nginx.",
    )(func)
    return _source_options(func)


def _source_options(func: F) -> F:
    func = click.option(
        "--app",
        "apps",
        multiple=True,
        metavar="NAME=SOCKET",
        help="Route /NAME/ to SOCKET (repeatable); works without a config file.",
    )(func)
    func = click.option("--listen", metavar="HOST:PORT", help="Override `listen`.")(func)
    return _config_option("Config file (default: ./sockgate.toml).")(func)


def _config_option(help: str) -> Callable[[F], F]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=help,
    )


def _config_only(func: F) -> F:
    return _config_option(
        "Config file (default: ./sockgate.toml): its workdir holds the control socket."
    )(func)


def _handle_errors(func: F) -> F:
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


def _load(
    config_path: Path | None, listen: str | None, apps: tuple[str, ...], engine: str | None = None
) -> config.Config:
    return config.load(config_path, listen=listen, apps=apps, engine=engine)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sockgate", message=f"%(prog)s %(version)s, {build()}")
def main() -> None:
    """One local HTTP endpoint in front of many apps on Unix domain sockets."""


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(config.DEFAULT_FILE),
    show_default=True,
    help="Where to write the config.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
def init(config_path: Path, force: bool) -> None:
    """Write a commented sockgate.toml and the working-directory layout."""
    try:
        created = scaffold.write(config_path, force=force)
    except FileExistsError:
        click.echo(f"sockgate: {config_path} exists; pass --force to overwrite it", err=True)
        sys.exit(EXIT_INVALID)
    for path in created:
        click.echo(f"created {path}")
    click.echo("next: edit the [apps] tables, then `sockgate check` and `sockgate run`")


@main.command()
@_config_options
@click.option("--strict", is_flag=True, help="Apps that are down are errors too.")
@_handle_errors
def check(
    config_path: Path | None,
    listen: str | None,
    apps: tuple[str, ...],
    engine: str | None,
    strict: bool,
) -> None:
    """Validate the config and probe every app's socket (and run `nginx -t` for that engine)."""
    cfg = _load(config_path, listen, apps, engine)
    where = cfg.source or "command line"
    click.echo(f"config ok: {where}")
    click.echo(f"listen {cfg.listen}, workdir {cfg.workdir}, engine {cfg.engine}")
    if cfg.engine == "nginx":
        from .nginx import render as nginx_render
        from .nginx import run as nginx_run

        nginx_run.test_config(cfg)
        click.echo(f"nginx -t ok: {nginx_render.conf_path(cfg)}")
    reports = asyncio.run(probe.probe_all(cfg))
    click.echo(_report_table(reports))
    if cfg.sockets_dir is not None:
        found = sum(r.discovered for r in reports)
        click.echo(f"discovery: every NAME.sock in {cfg.sockets_dir} at /NAME/ ({found} now)")
    down = [r for r in reports if r.down]
    if down:
        word = "error" if strict else "warning"
        click.echo(f"{word}: {len(down)} of {len(reports)} apps are not answering", err=True)
        if strict:
            sys.exit(EXIT_INVALID)


def _report_table(reports: list[probe.AppReport]) -> str:
    rows = [("APP", "PREFIX", "SOCKET", "STATE")]
    for r in reports:
        state = f"ok ({r.status})" if r.ok else r.state + (f": {r.detail}" if r.detail else "")
        if r.app.command is not None and not r.ok:
            state = f"not running: `sockgate run` starts it ({r.app.command.text})"
        if r.kind:
            state = f"{state} [{r.kind}]"
        rows.append((r.app.name, r.app.prefix, str(r.app.socket), state))
    if len(rows) == 1:
        return "no apps configured"
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )


@main.command()
@_config_options
@click.option("-v", "--verbose", is_flag=True, help="Debug messages too.")
@click.option("--watch", is_flag=True, help="Reload when the config file changes.")
@_handle_errors
def run(
    config_path: Path | None,
    listen: str | None,
    apps: tuple[str, ...],
    engine: str | None,
    verbose: bool,
    watch: bool,
) -> None:
    """Run in the foreground; Ctrl-C stops it, SIGHUP (`sockgate reload`) reloads the config."""
    # Kept for reloads: the same file, read again with the same command-line overrides.
    loader = config.Loader(config_path, listen, apps, engine)
    cfg = loader.load()
    loader = loader.pinned(cfg)
    if watch and cfg.source is None:
        raise SockgateError("--watch needs a config file; apps given with --app alone never change")
    configure(cfg.error_log, verbose=verbose, app_names=[app.name for app in cfg.supervised])
    warning = exposure_warning(cfg)
    if warning:
        click.echo(f"sockgate: warning: {warning}", err=True)
    if cfg.engine == "nginx":
        from .nginx import run as nginx_run

        sys.exit(nginx_run.run(cfg, loader=loader, watch=watch))
    sys.exit(workers.run(cfg, loader=loader, watch=watch))


@main.command()
@_config_only
@_handle_errors
def reload(config_path: Path | None) -> None:
    """Reload the running sockgate of this config.

    The config is checked here first: an invalid one is reported and nothing is sent. The
    built-in engine is asked on its control socket and the outcome is printed ("reloaded: ..."
    or why it was refused); the nginx engine (or a sockgate without a control socket) gets
    SIGHUP and logs the outcome in logs/error.log. Exit codes: 0 reloaded (or sent); 1 invalid
    config, or the reload was refused; 2 not running.
    """
    cfg = _load(config_path, None, ())
    if cfg.engine == "builtin":
        try:
            result = control.reload(cfg.control_socket)
        except control.NotRunning:
            pass  # no control socket (a workdir too deep for one): the signal still works
        else:
            click.echo(f"sockgate: {result['message']}", err=not result["ok"])
            if not result["ok"]:
                sys.exit(EXIT_INVALID)
            return
    pid = pidfile.live_pid(cfg.pid_file)
    if pid is None:
        raise SockgateError(
            f"sockgate is not running for {cfg.source or 'this config'} "
            f"(no live pid in {cfg.pid_file}); start it with `sockgate run`"
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise SockgateError(f"cannot signal pid {pid}: {exc.strerror}") from None
    click.echo(f"reload sent to sockgate (pid {pid}); the outcome is logged in {cfg.error_log}")


def exposure_warning(cfg: config.Config) -> str | None:
    """What a non-loopback listen address makes reachable from the network."""
    if cfg.listen.is_loopback:
        return None
    reachable = ", ".join(f"{app.prefix} ({app.name})" for app in cfg.apps) or "no apps yet"
    return (
        f"listening on {cfg.listen} (allow_remote = true): reachable from the network: {reachable}"
    )


@main.command()
@click.argument("app_name", metavar="[APP]", required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document (schema: docs/prefix-apps.md)."
)
@click.option(
    "--max-pages",
    type=click.IntRange(1, 1000),
    default=MAX_PAGES,
    show_default=True,
    help="Pages fetched per app at most.",
)
@_source_options
@_handle_errors
def lint(
    config_path: Path | None,
    listen: str | None,
    apps: tuple[str, ...],
    app_name: str | None,
    as_json: bool,
    max_pages: int,
) -> None:
    """Find links, redirects and cookies that leave an app's prefix (sub-path readiness).

    Fetches each app's index page (or APP's) and the pages it links to, through the running
    sockgate of this config or a temporary built-in engine, and reports every URL that escapes.

    Exit codes: 0 nothing escapes; 1 something escapes (or the config is invalid, as for every
    command); 2 could not lint (unknown APP, an app not answering, ...).
    """
    from .lint import report as lint_report
    from .lint import run as lint_run

    cfg = _load(config_path, listen, apps)
    report = asyncio.run(lint_run.lint(cfg, app_name, max_pages))
    if as_json:
        click.echo(json.dumps(lint_report.to_json(report), indent=2))
    else:
        click.echo(lint_report.to_text(report))
    for error in report.errors:
        click.echo(f"sockgate: lint: {error}", err=True)
    if report.errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_FOUND if report.escapes else 0)


def _control_socket(config_path: Path | None, command: str) -> tuple[config.Config, Path]:
    cfg = _load(config_path, None, ())
    if cfg.engine == "nginx":
        raise SockgateError(
            f"`sockgate {command}` talks to the built-in engine's control socket; the nginx "
            "engine has none (no status page either): stop it with Ctrl-C or SIGTERM to the "
            f"pid in {cfg.pid_file}"
        )
    return cfg, cfg.control_socket


@main.command()
@_config_only
@click.option(
    "--json", "as_json", is_flag=True, help="The status document (schema: docs/dashboard.md)."
)
@_handle_errors
def status(config_path: Path | None, as_json: bool) -> None:
    """Show each app's state, requests, errors, latency and streams, from the running sockgate.

    Asks the control socket in the config's workdir; exit code 2 when sockgate is not running
    there.
    """
    _, path = _control_socket(config_path, "status")
    doc = control.status(path)
    click.echo(json.dumps(doc, indent=2) if as_json else dashboard.table(doc))


@main.command()
@_config_only
@_handle_errors
def stop(config_path: Path | None) -> None:
    """Stop the running sockgate gracefully (as Ctrl-C) and wait until it has stopped.

    Exit code 2 when sockgate is not running in the config's workdir.
    """
    cfg, path = _control_socket(config_path, "stop")
    control.stop(path, cfg.timeouts.shutdown + 10)
    click.echo(f"stopped sockgate in {cfg.workdir}")


@main.group()
def nginx() -> None:
    """The nginx engine: the same config rendered for user-mode nginx."""


@nginx.command("render")
@_config_options
@_handle_errors
def nginx_render_command(
    config_path: Path | None, listen: str | None, apps: tuple[str, ...], engine: str | None
) -> None:
    """Print the nginx.conf that `run --engine nginx` would write."""
    from .nginx import run as nginx_run

    cfg = _load(config_path, listen, apps, engine)
    click.echo(nginx_run.render_here(cfg), nl=False)


@main.command()
@click.option("--listen", default=config.DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT")
@_handle_errors
def demo(listen: str) -> None:
    """Two demo apps on Unix sockets behind the proxy; Ctrl-C stops everything."""
    from .demo.run import run_demo

    sys.exit(run_demo(listen, echo=click.echo))
