"""The commands that set up and start sockgate: init, check, run, demo and nginx render."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from .. import config
from ..config import scaffold
from ..errors import SockgateError
from ..proc import systemd, workers
from ..proc.logsetup import configure
from ..status import control, probe
from .common import EXIT_ERROR, EXIT_INVALID, config_options, handle_errors, load

# The nginx commands' modules are imported by those commands: `sockgate run` on the built-in
# engine would otherwise hold them for as long as it runs.


@click.command()
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


@click.command()
@config_options
@click.option("--strict", is_flag=True, help="Apps that are down are errors too.")
@handle_errors
def check(
    config_path: Path | None,
    listen: str | None,
    apps: tuple[str, ...],
    engine: str | None,
    strict: bool,
) -> None:
    """Validate the config, probe the listen address and every app's socket (and run `nginx -t`
    for that engine).

    Exit codes: 0 ok (apps that are down are warnings); 1 invalid config, or (with --strict)
    apps down; 2 the listen address (or `[tls]`'s) is taken by another program, or the
    certificates cannot be used (as `run` would fail), or could not check (nginx missing, ...).
    """
    cfg = load(config_path, listen, apps, engine)
    where = cfg.source or "command line"
    click.echo(f"config ok: {where}")
    click.echo(f"workdir {cfg.workdir}, engine {cfg.engine}")
    if cfg.engine == "nginx":
        from ..nginx import render as nginx_render
        from ..nginx import run as nginx_run

        nginx_run.test_config(cfg)
        click.echo(f"nginx -t ok: {nginx_render.conf_path(cfg)}")
    running_at = _running_at(cfg)
    listening = probe.probe_listen(cfg, running_at)
    click.echo(listening.text, err=not listening.ok)
    startable = listening.ok
    if cfg.tls is not None:
        from ..tls import contexts

        https = probe.probe_listen(cfg, running_at, tls=True)
        click.echo(https.text, err=not https.ok)
        certs_ok, certs = contexts.check(cfg.tls)
        click.echo(certs, err=not certs_ok)
        startable = startable and https.ok and certs_ok
    reports = asyncio.run(probe.probe_all(cfg))
    click.echo(_report_table(cfg, reports))
    if cfg.sockets_dir is not None:
        found = sum(r.discovered for r in reports)
        also = " and at NAME.localhost" if cfg.host_routes else ""
        click.echo(f"discovery: every NAME.sock in {cfg.sockets_dir} at /NAME/{also} ({found} now)")
    down = [r for r in reports if r.down]
    if down:
        word = "error" if strict else "warning"
        click.echo(f"{word}: {len(down)} of {len(reports)} apps are not answering", err=True)
    if not startable:
        sys.exit(EXIT_ERROR)  # as `run` would exit
    if down and strict:
        sys.exit(EXIT_INVALID)


def _running_at(cfg: config.Config) -> str | None:
    """Where the sockgate of this workdir listens, if one answers on its control socket."""
    try:
        return str(control.status(cfg.control_socket, timeout=2.0)["sockgate"]["listen"])
    except (SockgateError, KeyError, TypeError):
        return None


def _report_table(cfg: config.Config, reports: list[probe.AppReport]) -> str:
    """A row per app: name, prefix, socket, its host URL (with host_routes), and its state."""
    head = ("APP", "PREFIX", "SOCKET", *(("HOST URL",) if cfg.host_routes else ()), "STATE")
    rows = [head]
    for r in reports:
        state = f"ok ({r.status})" if r.ok else r.state + (f": {r.detail}" if r.detail else "")
        if r.app.command is not None and not r.ok:
            state = f"not running: `sockgate run` starts it ({r.app.command.shown})"
        if r.kind:
            state = f"{state} [{r.kind}]"
        host = (_host_cell(cfg, r.app),) if cfg.host_routes else ()
        rows.append((r.app.name, r.app.prefix, str(r.app.socket), *host, state))
    if len(rows) == 1:
        return "no apps configured"
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    )


def _host_cell(cfg: config.Config, app: config.App) -> str:
    """The app's host URL; with `listen` on port 0, its host name (the port is chosen at start)."""
    if cfg.listen.port == 0:
        return config.own_host(app.name)
    return cfg.host_url(app) or "-"


@click.command()
@config_options
@click.option("-v", "--verbose", is_flag=True, help="Debug messages too.")
@click.option("--watch", is_flag=True, help="Reload when the config file changes.")
@handle_errors
def run(
    config_path: Path | None,
    listen: str | None,
    apps: tuple[str, ...],
    engine: str | None,
    verbose: bool,
    watch: bool,
) -> None:
    """Run in the foreground; Ctrl-C stops it, SIGHUP (`sockgate reload`) reloads the config.

    Exit codes: 0 stopped (Ctrl-C, SIGTERM or `sockgate stop`); 1 invalid config; 2 could not
    start (the listen address taken, a sockgate already running in the workdir, nginx
    missing, a socket passed by systemd refused, ...).
    """
    # Kept for reloads: the same file, read again with the same command-line overrides.
    loader = config.Loader(config_path, listen, apps, engine)
    cfg = loader.load()
    loader = loader.pinned(cfg)
    if watch and cfg.source is None:
        raise SockgateError("--watch needs a config file; apps given with --app alone never change")
    configure(cfg.error_log, verbose=verbose, app_names=[app.name for app in cfg.supervised])
    # Under systemd: what it passed is taken out of the environment the apps will inherit.
    systemd.take_environment()
    inherited = systemd.activated(cfg)
    if inherited is not None and cfg.engine == "nginx":
        for sock in inherited:
            sock.detach()
        raise SockgateError(
            "socket activation is built-in engine only: nginx binds `listen` itself. Remove the "
            'socket unit (sockgate service install without --socket), or use engine = "builtin"'
        )
    addresses = [systemd.address_of(s) for s in inherited] if inherited else [cfg.listen]
    for address in addresses:
        warning = exposure_warning(cfg, address)
        if warning:
            click.echo(f"sockgate: warning: {warning}", err=True)
    if cfg.engine == "nginx":
        from ..nginx import run as nginx_run

        sys.exit(nginx_run.run(cfg, loader=loader, watch=watch))
    sys.exit(workers.run(cfg, loader=loader, watch=watch, socks=inherited))


def exposure_warning(cfg: config.Config, listen: config.Listen | None = None) -> str | None:
    """What a non-loopback listen address (`listen`, else the config's) makes reachable from
    the network."""
    listen = listen or cfg.listen
    if listen.is_loopback:
        return None
    reachable = ", ".join(f"{app.prefix} ({app.name})" for app in cfg.apps) or "no apps yet"
    return f"listening on {listen} (allow_remote = true): reachable from the network: {reachable}"


@click.group()
def nginx() -> None:
    """The nginx engine: the same config rendered for user-mode nginx."""


@nginx.command("render")
@config_options
@handle_errors
def nginx_render_command(
    config_path: Path | None, listen: str | None, apps: tuple[str, ...], engine: str | None
) -> None:
    """Print the nginx.conf that `run --engine nginx` would write."""
    from ..nginx import run as nginx_run

    cfg = load(config_path, listen, apps, engine)
    click.echo(nginx_run.render_here(cfg), nl=False)


@click.command()
@click.option("--listen", default=config.DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT")
@click.option(
    "--https",
    is_flag=False,
    flag_value="127.0.0.1:8443",
    default=None,
    metavar="[HOST:PORT]",
    help="Also serve HTTPS and HTTP/2 (default address 127.0.0.1:8443), with certificates from "
    "the local CA (`sockgate trust` makes browsers trust it).",
)
@handle_errors
def demo(listen: str, https: str | None) -> None:
    """Two demo apps on Unix sockets behind the proxy; Ctrl-C stops everything."""
    from ..demo.run import run_demo

    sys.exit(run_demo(listen, echo=click.echo, https=https))
