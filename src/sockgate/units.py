"""Durations and sizes as users write them: `90s`, `5m`, `1h30m`, `500ms`; `10m`, `1g`, `512k`."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90s" or "1h30m". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for part in _DURATION_PART.finditer(text):
            if part.start() != pos:
                break
            seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
            pos = part.end()
        if not text or pos != len(text):
            raise ValueError("expected a duration such as 500ms, 90s, 5m, 1h or 1h30m")
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("expected a finite, non-negative duration")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "10m" or "512KiB". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a size, not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError("expected a size in bytes or with a unit: 512k, 10m, 1g")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    else:
        raise ValueError(f"expected a size, got {type(value).__name__}")
    if size < 0:
        raise ValueError("expected a non-negative size")
    return size


def format_duration(seconds: float) -> str:
    """The shortest exact spelling that parse_duration reads back (nginx accepts it too)."""
    millis = round(seconds * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms"
