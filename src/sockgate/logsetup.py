"""Where sockgate's own messages go: the terminal and logs/error.log, nginx-style."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FILE_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"


def configure(error_log: Path | None, *, verbose: bool = False) -> None:
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


def reopen() -> None:
    """Write error.log to a fresh open of its file from now on (it may have been rotated)."""
    for handler in logging.getLogger("sockgate").handlers:
        if isinstance(handler, logging.FileHandler):
            stream = open(handler.baseFilename, "a", encoding="utf-8")  # noqa: SIM115
            old = handler.setStream(stream)
            if old is not None:
                old.close()
