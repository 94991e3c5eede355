"""`sockgate lint`: what in an app's pages leaves its prefix."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from ..lint import MAX_PAGES
from .common import EXIT_ERROR, EXIT_FOUND, handle_errors, load, source_options

# The lint package's modules are imported by the command: `sockgate run` would otherwise hold
# them (and html.parser) for as long as it runs.


@click.command()
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
@source_options
@handle_errors
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
    from ..lint import report as lint_report
    from ..lint import run as lint_run

    cfg = load(config_path, listen, apps)
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
