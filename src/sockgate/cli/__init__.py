"""The `sockgate` command. Each command loads the config, calls one function, and turns known
errors into one line on stderr and an exit code (`common`). The commands live in modules by
what they are for: starting (`start`), managing what runs (`manage`), `lint`, and
starting at login (`service`)."""

from __future__ import annotations

import click

from .. import __version__
from ..buildinfo import build, docs_dir
from . import lint, logs, manage, service, start, trust

DOCS = docs_dir()


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        # \b: kept as one line, however long the path (click would wrap it otherwise).
        f"\b\nDocs: {DOCS} (config.md has every key of sockgate.toml)"
        if DOCS is not None
        else "Docs: the README and docs/ of sockgate's source."
    ),
)
@click.version_option(__version__, prog_name="sockgate", message=f"%(prog)s %(version)s, {build()}")
def main() -> None:
    """One local HTTP endpoint in front of many apps on Unix domain sockets.

    Start with `sockgate init` (or `sockgate demo`), then `sockgate check` and `sockgate run`;
    `sockgate COMMAND --help` for each command and its exit codes.
    """


for command in (
    start.init,
    start.check,
    start.run,
    manage.reload,
    lint.lint,
    manage.status,
    manage.stop,
    logs.logs,
    start.nginx,
    start.demo,
    service.service,
    trust.trust,
):
    main.add_command(command)
