"""`sockgate service`: start sockgate at login with a systemd --user unit for this config
(`install`, `uninstall`, `status`). The units are `proc/systemd_units`' (docs/service.md); what
`sockgate run` tells systemd, and the sockets it takes from it, are `proc/systemd`'."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from .. import config
from ..errors import SockgateError
from ..proc import systemd_units, unitfiles
from .common import config_option, handle_errors

NAME_HELP = "NAME in sockgate-NAME.service (default: the workdir's folder name)."


@click.group()
def service() -> None:
    """Start sockgate at login: a systemd --user unit for this config (docs/service.md)."""


@service.command()
@config_option("Config file (default: ./sockgate.toml); the service runs and reloads it.")
@click.option("--name", help=NAME_HELP)
@click.option(
    "--socket",
    "with_socket",
    is_flag=True,
    help="Also a .socket unit on `listen` that starts sockgate on the first connection.",
)
@click.option("--no-start", is_flag=True, help="Write the units only; enable nothing.")
@click.option("--force", is_flag=True, help="Replace units installed under the same name.")
@handle_errors
def install(
    config_path: Path | None, name: str | None, with_socket: bool, no_start: bool, force: bool
) -> None:
    """Write sockgate-NAME.service (and .socket) for this config, then enable and start it.

    Without systemctl (or with --no-start) the files are written and the commands that start
    them are printed.
    """
    path = config_path or Path(config.DEFAULT_FILE)
    if not path.is_file():
        raise SockgateError(
            f"no config file {path}: a service runs a config file, which `sockgate reload` (its "
            "ExecReload) reads again; `sockgate init` writes one, or pass -c PATH"
        )
    cfg = config.load(path)
    name = systemd_units.check_name(name) if name else systemd_units.default_name(cfg.workdir)
    units = systemd_units.render(
        cfg, name=name, python=sys.executable, socket=with_socket, path=os.environ.get("PATH")
    )
    directory = _unit_dir()
    systemctl = None if no_start else unitfiles.find_systemctl()
    if force and systemctl is not None:
        # A reinstall: what runs now stops, and starts again from the new files.
        old = [p.name for p in unitfiles.installed(directory, name)]
        if old:
            unitfiles.systemctl(systemctl, "disable", "--now", *old, quiet=True)
    written, removed = unitfiles.write(directory, units, force=force)
    for unit in written:
        click.echo(f"wrote {unit}")
    for unit in removed:
        click.echo(f"removed {unit} (left from an earlier install)")
    commands = [("daemon-reload",), ("enable", "--now", units.start)]
    if systemctl is None:
        why = "--no-start" if no_start else "systemctl is not on PATH"
        click.echo(f"not started ({why}); to start it now and at every login:")
        for args in commands:
            click.echo(f"  systemctl --user {shlex.join(args)}")
        return
    for args in commands:
        code = _run(systemctl, *args)
        if code != 0:
            raise SockgateError(
                f"`systemctl --user {shlex.join(args)}` exited with status {code} (is a user "
                "manager running? a login session, or `loginctl enable-linger`); the units are "
                f"written: `{' && '.join(f'systemctl --user {shlex.join(c)}' for c in commands)}` "
                "starts them once it is"
            )
    what = f"on the first connection to {cfg.listen}" if with_socket else "now"
    click.echo(f"enabled {units.start}: sockgate starts {what} and at every login")
    click.echo(
        f"  status: sockgate service status --name {name}; logs: journalctl --user -u "
        f"{units.service}"
    )


@service.command()
@config_option("Config file (default: ./sockgate.toml): its workdir names the service.")
@click.option("--name", help=NAME_HELP)
@handle_errors
def uninstall(config_path: Path | None, name: str | None) -> None:
    """Stop and disable sockgate-NAME's units, and remove their files."""
    name = _name(config_path, name)
    directory = _unit_dir()
    paths = unitfiles.installed(directory, name)
    if not paths:
        raise SockgateError(f"no {systemd_units.PREFIX}{name} units in {directory}")
    systemctl = unitfiles.find_systemctl()
    if systemctl is None:
        click.echo("systemctl is not on PATH: nothing to stop", err=True)
    # The files go whatever systemctl says: without a user manager nothing of them runs.
    elif _run(systemctl, "disable", "--now", *(p.name for p in paths)) != 0:
        click.echo("sockgate: warning: disable failed (see above); removing the files", err=True)
    unitfiles.remove(paths)
    for path in paths:
        click.echo(f"removed {path}")
    if systemctl is not None:
        _run(systemctl, "daemon-reload")


@service.command()
@config_option("Config file (default: ./sockgate.toml): its workdir names the service.")
@click.option("--name", help=NAME_HELP)
@handle_errors
def status(config_path: Path | None, name: str | None) -> None:
    """`systemctl --user status` of sockgate-NAME (and its socket); exits with its status."""
    name = _name(config_path, name)
    systemctl = unitfiles.find_systemctl()
    if systemctl is None:
        raise SockgateError("systemctl is not on PATH: no systemd to ask")
    paths = unitfiles.installed(_unit_dir(), name)
    units = [p.name for p in paths] or [f"{systemd_units.PREFIX}{name}.service"]
    sys.exit(unitfiles.systemctl(systemctl, "status", *units))


def _name(config_path: Path | None, name: str | None) -> str:
    if name:
        return systemd_units.check_name(name)
    path = config_path or Path(config.DEFAULT_FILE)
    if config_path is None and not path.is_file():
        raise SockgateError(f"no {path} here: pass --name NAME or -c PATH")
    return systemd_units.default_name(config.load(path).workdir)


def _unit_dir() -> Path:
    return systemd_units.unit_dir(os.environ, Path.home())


def _run(systemctl: str, *args: str) -> int:
    click.echo(f"systemctl --user {shlex.join(args)}")
    return unitfiles.systemctl(systemctl, *args)
