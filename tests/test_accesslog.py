"""The access log's lines, built for every request: request time, escaping and its memo."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sockgate.engine import accesslog
from sockgate.engine.accesslog import AccessLog


def lines_logged(path: Path, *entries: tuple[bytes, float, float]) -> list[str]:
    """Log (user agent, started, now) entries and return the lines the file then holds."""

    async def log_all() -> None:
        log = AccessLog(path)
        try:
            for agent, started, now in entries:
                log.log("127.0.0.1", b"GET /a HTTP/1.1", 200, 2, None, agent, started, "a", now)
        finally:
            log.close()

    asyncio.run(log_all())
    return path.read_text(encoding="ascii").splitlines()


@pytest.mark.parametrize(
    ("seconds", "logged"),
    [
        (0.0, "rt=0.000"),
        (0.0004, "rt=0.000"),
        (0.0005, "rt=0.001"),  # half up
        (0.042, "rt=0.042"),
        (1.005, "rt=1.005"),
        (12.3456, "rt=12.346"),
        (3600.5, "rt=3600.500"),
        (-0.2, "rt=0.000"),  # the wall clock stepped back during the request
    ],
)
def test_request_time_is_seconds_and_three_digits_of_milliseconds(
    tmp_path: Path, seconds: float, logged: str
) -> None:
    (line,) = lines_logged(tmp_path / "access.log", (b"ua", 0.0, seconds))
    assert f" {logged} app=a" in line, line


def test_a_value_escaped_once_is_escaped_each_time(tmp_path: Path) -> None:
    """The second line's agent comes from the memo of escaped values, escaped all the same."""
    agent = b'memo" "x\\y\xc3\xa9'
    first, second = lines_logged(tmp_path / "access.log", (agent, 0.0, 0.0), (agent, 0.0, 0.0))
    escaped = r'"memo\x22 \x22x\x5Cy\xC3\xA9" rt='
    assert escaped in first, first
    assert escaped in second, second


def test_the_memo_of_escaped_values_is_bounded_in_count_and_length(tmp_path: Path) -> None:
    long_agent = b"L" * (accesslog._ESCAPED_LONGEST + 1)
    agents = [b"agent-%d" % n for n in range(2 * accesslog._ESCAPED_MAX)] + [long_agent]
    lines = lines_logged(tmp_path / "access.log", *((agent, 0.0, 0.0) for agent in agents))
    assert len(lines) == len(agents)
    assert f'"{long_agent.decode()}" rt=' in lines[-1]
    assert 0 < len(accesslog._ESCAPED) <= accesslog._ESCAPED_MAX
    assert long_agent not in accesslog._ESCAPED
