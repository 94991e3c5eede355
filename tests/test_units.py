"""Durations and sizes as users write them, and the spelling sockgate writes back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockgate.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1h0m5s", 3605.0),
        ("1s500ms", 1.5),
        ("1.5s", 1.5),
        ("0.25h", 900.0),
        ("0s", 0.0),
        ("0ms", 0.0),
        (" 5s ", 5.0),
        ("5S", 5.0),
        ("2H", 7200.0),
    ],
)
def test_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "seconds"), [(5, 5.0), (0, 0.0), (2.5, 2.5), (0.001, 0.001), (86400, 86400.0)]
)
def test_duration_numbers_are_seconds(value: float, seconds: float) -> None:
    result = parse_duration(value)
    assert isinstance(result, float)
    assert result == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "5x",
        "-1",
        "-1s",
        "s",
        "ms",
        "1h 30m",  # no spaces between parts
        "1h30",  # every part needs a unit
        "1.s",
        ".5s",
        "1e3s",
        "5 s",
        "five seconds",
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        True,
        False,
        None,
        [5],
        {"s": 5},
    ],
)
def test_bad_durations_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_boolean_duration_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("7", 7),
        (" 7 ", 7),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("512kb", 512 * 1024),
        ("512KiB", 512 * 1024),
        ("10m", 10 * 1024**2),
        ("10 m", 10 * 1024**2),
        ("1MB", 1024**2),
        ("1g", 1024**3),
        ("1GiB", 1024**3),
        ("3b", 3),
    ],
)
def test_size_strings(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("value", "size"), [(0, 0), (1, 1), (10 * 1024**2, 10 * 1024**2)])
def test_size_integers_are_bytes(value: int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["", "k", "-1", "1.5m", "1t", "10 megabytes", "1kk", -1, 1.5, True, False, None, [1]]
)
def test_bad_sizes_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1.5, "1500ms"),
        (1, "1s"),
        (90, "90s"),
        (300, "5m"),
        (5400, "90m"),
        (3600, "1h"),
        (7200, "2h"),
        (86400, "1d"),
        (90061, "90061s"),
        (0, "0ms"),
    ],
)
def test_format_duration_shortest_exact_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "text", ["500ms", "90s", "5m", "1h", "1h30m", "1d", "75s", "60s", "1500ms", "3h"]
)
def test_format_parse_round_trip_from_text(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=10**10))
def test_format_parse_round_trip_for_every_whole_millisecond(millis: int) -> None:
    seconds = millis / 1000
    text = format_duration(seconds)
    assert round(parse_duration(text) * 1000) == millis
    assert format_duration(parse_duration(text)) == text
