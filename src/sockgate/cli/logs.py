"""`sockgate logs`: the access log, the error log and the output of the apps sockgate runs, each
line after its source, one app's lines alone, followed live with -f."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import click

from ..proc.logsetup import use_colour
from ..status.logfiles import Logs
from ..status.loglines import Line, Painter
from .common import handle_errors
from .manage import locate, workdir_options


@click.command()
@workdir_options
@click.argument("app", required=False)
@click.option("-f", "--follow", is_flag=True, help="Then print lines as they are written.")
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many last lines of each source to show first.",
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour each line's source (auto: on a terminal, unless NO_COLOR is set).",
)
@handle_errors
def logs(
    config_path: Path | None,
    workdir: Path | None,
    apps: tuple[str, ...],
    app: str | None,
    follow: bool,
    count: int,
    color: str,
) -> None:
    """Show the access log, the error log and the output of the apps sockgate runs.

    Each line comes after its source: `access`, `error` or the app's name. First the last N
    lines of each (-n), in time order; with -f, then the lines written from now on, until
    Ctrl-C. With APP, only that app's lines: access lines whose `app=` field names it, error
    log messages about it (its process, its socket's faults), and its own output. The logs are
    those of the workdir of the config (or -w DIR, or the current directory). Exit code 2 when
    there is no logs folder there or APP is not a known app.
    """
    cfg = locate(config_path, workdir)
    view = Logs(cfg, app, apps)
    colour = color == "always" or (color == "auto" and use_colour(sys.stdout))
    painter = Painter(view.sources, colour=colour)
    try:
        _show(view.tail(count), painter)
        if follow:
            for batch in view.follow():
                _show(batch, painter)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a follow: that is how it is meant to stop
    except BrokenPipeError:
        # Whatever read the output (`| head`) stopped reading: stop quietly, as `cat` would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        view.close()


def _show(lines: Iterable[Line], painter: Painter) -> None:
    text = "\n".join(painter.paint(line) for line in lines)
    if text:
        # color= as decided: click would otherwise strip the colours whenever stdout is not a
        # terminal, even with --color always.
        click.echo(text, color=painter.colour)
