"""The commands that manage a running sockgate: reload, status and stop. Each finds it by its
workdir (where its control socket and pid file are): from `-w`, from the config file, or, with
neither, the current directory, as `sockgate run --app ...` without a config file uses."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

import click

from .. import config
from ..errors import SockgateError
from ..proc import pidfile
from ..status import control, dashboard
from .common import EXIT_INVALID, F, config_option, handle_errors


def workdir_options(func: F) -> F:
    func = click.option(
        "--app",
        "apps",
        multiple=True,
        metavar="NAME=SOCKET",
        help="As given to `sockgate run` (accepted so the same flags work here; the workdir "
        "finds it).",
    )(func)
    func = click.option(
        "-w",
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The workdir of the running sockgate, instead of a config file.",
    )(func)
    return config_option(
        "Config file (default: ./sockgate.toml, if there is one): its workdir holds the "
        "control socket."
    )(func)


def locate(config_path: Path | None, workdir: Path | None) -> config.Config:
    """The config of the sockgate to manage: the file's, or, found by workdir alone, one with
    no file (`source` None) that says where that sockgate keeps its things."""
    if workdir is not None:
        if config_path is not None:
            raise SockgateError("pass -c PATH or -w DIR, not both: a config file names its workdir")
        if not workdir.is_dir():
            raise SockgateError(f"-w {workdir}: no such directory")
        return config.bare(workdir.resolve())
    if config_path is not None or Path(config.DEFAULT_FILE).exists():
        return config.load(config_path)
    # Started with --app alone: its workdir is the directory it was started in.
    return config.bare(Path.cwd())


def _running_pid(cfg: config.Config) -> int:
    """The pid of the sockgate running in the workdir; not running there: SockgateError."""
    pid = pidfile.live_pid(cfg.pid_file)
    if pid is None:
        hint = "" if cfg.source else "; for one elsewhere pass -c PATH or -w DIR"
        raise SockgateError(
            f"sockgate is not running in {cfg.workdir} (nothing answers on "
            f"{cfg.control_socket}, no live pid in {cfg.pid_file}){hint}"
        )
    return pid


@click.command()
@workdir_options
@handle_errors
def reload(config_path: Path | None, workdir: Path | None, apps: tuple[str, ...]) -> None:
    """Reload the running sockgate of this config (or workdir).

    The config is checked here first: an invalid one is reported and nothing is sent. The
    built-in engine is asked on its control socket and the outcome is printed ("reloaded: ..."
    or why it was refused); the nginx engine (or a sockgate without a control socket) gets
    SIGHUP and logs the outcome in logs/error.log. Exit codes: 0 reloaded (or sent); 1 invalid
    config, or the reload was refused; 2 not running.
    """
    cfg = locate(config_path, workdir)
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
    pid = _running_pid(cfg)
    _signal(pid, signal.SIGHUP)
    click.echo(f"reload sent to sockgate (pid {pid}); the outcome is logged in {cfg.error_log}")


@click.command()
@workdir_options
@click.option(
    "--json", "as_json", is_flag=True, help="The status document (schema: docs/dashboard.md)."
)
@handle_errors
def status(
    config_path: Path | None, workdir: Path | None, apps: tuple[str, ...], as_json: bool
) -> None:
    """Show each app's state, requests, errors, latency and streams, from the running sockgate.

    Asks the control socket in the workdir (of the config, of -w, or the current directory);
    exit code 2 when sockgate is not running there.
    """
    cfg = locate(config_path, workdir)
    if cfg.engine == "nginx":
        raise SockgateError(
            "`sockgate status` asks the built-in engine's control socket; the nginx engine has "
            f"none (no status page either): its logs are in {cfg.logs_dir}"
        )
    try:
        doc = control.status(cfg.control_socket)
    except control.NotRunning:
        pid = _running_pid(cfg)
        raise SockgateError(
            f"sockgate runs in {cfg.workdir} (pid {pid}) without a control socket: the nginx "
            "engine, which keeps no status (or a workdir too deep for one); its logs: "
            "`sockgate logs`"
        ) from None
    click.echo(json.dumps(doc, indent=2) if as_json else dashboard.table(doc))


@click.command()
@workdir_options
@handle_errors
def stop(config_path: Path | None, workdir: Path | None, apps: tuple[str, ...]) -> None:
    """Stop the running sockgate gracefully (as Ctrl-C) and wait until it has stopped.

    The built-in engine is asked on its control socket; a sockgate without one (the nginx
    engine) gets SIGTERM. Exit code 2 when sockgate is not running in the workdir.
    """
    cfg = locate(config_path, workdir)
    timeout = cfg.timeouts.shutdown + 10
    try:
        control.stop(cfg.control_socket, timeout)
    except control.NotRunning:
        _stop_by_signal(_running_pid(cfg), timeout)
    click.echo(f"stopped sockgate in {cfg.workdir}")


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except OSError as exc:
        raise SockgateError(f"cannot signal pid {pid}: {exc.strerror}") from None


def _stop_by_signal(pid: int, timeout: float) -> None:
    # Not our child, so no wait(): a pidfd turns readable when the process has exited.
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        _signal(pid, signal.SIGTERM)
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not readable:
        raise SockgateError(f"sockgate (pid {pid}) did not stop within {timeout:g}s of SIGTERM")
