"""The `sockgate` command. Each command loads the config, calls one function, and turns known
errors into one line on stderr and an exit code (`common`). The commands live in modules by
what they are for: starting (`start`), managing what runs (`manage`) and `lint`."""

from __future__ import annotations

import click

from .. import __version__
from ..buildinfo import build
from . import lint, manage, start


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sockgate", message=f"%(prog)s %(version)s, {build()}")
def main() -> None:
    """One local HTTP endpoint in front of many apps on Unix domain sockets."""


for command in (
    start.init,
    start.check,
    start.run,
    manage.reload,
    lint.lint,
    manage.status,
    manage.stop,
    start.nginx,
    start.demo,
):
    main.add_command(command)
