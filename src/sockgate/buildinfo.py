"""Which build of sockgate runs: the request path compiled by mypyc, or plain Python."""

from __future__ import annotations

from pathlib import Path

from .engine import client


def compiled() -> bool:
    """Whether the request path runs as mypyc-compiled C extensions (a wheel built with a C
    compiler at hand, see hatch_build.py) or as plain Python (an editable install, or no
    compiler), which works the same at about half the speed."""
    return not client.__file__.endswith((".py", ".pyc"))


def build() -> str:
    return "compiled (mypyc)" if compiled() else "pure Python"


def docs_dir() -> Path | None:
    """Where this sockgate's docs are: in the installed package (a wheel carries them), or in
    the checkout an editable install runs from; None if neither has them."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "docs", package.parents[1] / "docs"):
        if (candidate / "config.md").is_file():
            return candidate
    return None
