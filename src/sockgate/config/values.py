"""Typed values read off a parsed TOML table: strings, booleans, sizes, durations, paths.

Every check fails with a ConfigError that names the source, the dotted key, the value and what
was expected; the readers of the file's top level and of its apps build on these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from ..units import parse_duration, parse_size

T = TypeVar("T")


class Reader:
    """Validates one source; every error names it, the dotted key, the value and the expectation."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=key)

    def no_unknown(self, where: str, raw: Mapping[str, Any], known: set[str]) -> None:
        for key in raw:
            if key not in known:
                dotted = f"{where}.{key}" if where else key
                expected = ", ".join(sorted(known))
                raise self.fail(dotted, f"unknown key (expected one of: {expected})")

    def table(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {kind_of(value)} {value!r}")
        return value

    def string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {kind_of(value)} {value!r}")
        return value

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {kind_of(value)} {value!r}")
        return value

    def size(self, key: str, value: object) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.fail(key, f"{value!r}: {exc}") from None

    def duration(self, key: str, value: object) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, f"{value!r}: {exc}") from None

    def opt(
        self, raw: Mapping[str, Any], name: str, key: str, conv: Callable[[str, object], T]
    ) -> T | None:
        return conv(key, raw[name]) if name in raw else None

    def path(self, key: str, value: object, *, follow_links: bool = True) -> Path:
        text = self.string(key, value)
        if not text or "\0" in text:
            raise self.fail(key, f"{text!r}: expected a path")
        path = self.base / Path(text).expanduser()
        # A socket path may be a link that a deploy swaps: keep the link, only make it absolute.
        return path.resolve() if follow_links else Path(os.path.abspath(path))

    def directory(self, key: str, value: object) -> Path:
        path = self.path(key, value)
        if not path.is_dir():
            raise self.fail(key, f"{str(path)!r}: expected an existing directory")
        return path

    def positive(self, key: str, value: object) -> float:
        seconds = self.duration(key, value)
        if seconds == 0:
            raise self.fail(key, f"{value!r}: must be greater than zero")
        return seconds


def kind_of(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "table" if isinstance(value, dict) else type(value).__name__
    )
