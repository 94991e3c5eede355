"""Where sockgate's own messages go: the terminal and logs/error.log, nginx-style. The output of
the apps sockgate runs goes to the terminal too, each line after its app's name, foreman-style."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

_FILE_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"
# Cyan, yellow, green, magenta, red, blue, then their bright variants: as honcho picks them.
_COLOURS = (36, 33, 32, 35, 31, 34, 96, 93, 92, 95, 91, 94)


def configure(
    error_log: Path | None, *, verbose: bool = False, app_names: Sequence[str] = ()
) -> None:
    root = logging.getLogger("sockgate")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("sockgate: %(message)s"))
    root.addHandler(console)
    if error_log is not None:
        error_log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(error_log, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FILE_FORMAT, _DATE_FORMAT))
        root.addHandler(handler)
    # App output: the console only (each app has its own logs/<app>.log).
    output = logging.getLogger("sockgate.output")
    output.handlers.clear()
    output.propagate = False
    output.setLevel(logging.INFO)
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(AppLineFormatter(app_names, colour=use_colour(sys.stderr)))
    output.addHandler(lines)


def use_colour(stream: object) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return not os.environ.get("NO_COLOR") and callable(isatty) and bool(isatty())


class AppLineFormatter(logging.Formatter):
    """`notes | the line`: names padded to the longest, each app in a colour of its own."""

    def __init__(self, names: Sequence[str], *, colour: bool) -> None:
        super().__init__()
        self.width = max((len(name) for name in names), default=0)
        self.colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        name = str(getattr(record, "app", "?"))
        label = f"{name:<{self.width}} |"
        if self.colour:
            code = self.colours.get(name, _COLOURS[len(self.colours) % len(_COLOURS)])
            label = f"\x1b[{code}m{label}\x1b[0m"
        return f"{label} {record.getMessage()}"


def reopen() -> None:
    """Write error.log to a fresh open of its file from now on (it may have been rotated)."""
    for handler in logging.getLogger("sockgate").handlers:
        if isinstance(handler, logging.FileHandler):
            stream = open(handler.baseFilename, "a", encoding="utf-8")  # noqa: SIM115
            old = handler.setStream(stream)
            if old is not None:
                old.close()
