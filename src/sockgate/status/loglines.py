"""The lines of sockgate's logs as `sockgate logs` reads them: which app a line is about, when
it was written, the order of lines from several files, and the prefix each is shown after.

Three kinds of source, each named as it is shown: `access` (logs/access.log, one line per
exchange, the app's name in its `app=` field, both engines), `error` (logs/error.log: sockgate's
own messages, and nginx's with the nginx engine; a message of several lines continues on lines
without a timestamp) and an app's name (logs/<app>.log, the output of an app sockgate runs,
with sockgate's `[sockgate ...]` notes)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

ACCESS: Final = "access"
ERROR: Final = "error"
# What a prefix is coloured with: the access and error logs have their own, apps take turns in
# the rest of the colours `sockgate run` gives its apps (cyan, yellow, green, magenta, then
# their bright variants).
ACCESS_COLOUR: Final = 34  # blue
ERROR_COLOUR: Final = 31  # red
APP_COLOURS: Final = (36, 33, 32, 35, 96, 93, 92, 95)

# `... rt=0.001 app=NAME` ends every access line: "-" (built-in) or nothing (nginx) for none.
_ACCESS_APP: Final = re.compile(r" app=(\S*)$")
_ACCESS_TIME: Final = re.compile(
    r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\]"
)
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# The head of an error.log record, sockgate's and nginx's alike: `2024/05/01 12:00:00 [info] `.
_RECORD: Final = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] ")
# Then sockgate's logger name and, in a worker's lines, its label: the message follows.
_LOGGER: Final = re.compile(r"sockgate(?:\.\w+)*: (?:worker \d+: )?")
# A time at the start of a line: error.log's, a `[sockgate ...]` note in an app's log, or the
# ISO-like stamps most app servers print (with a zone when they give one; else local time).
_LEADING_TIME: Final = re.compile(
    r"\[?(?:sockgate )?(\d{4})[-/](\d\d)[-/](\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,]\d+)?"
    r"(?: ?(Z|[+-]\d\d:?\d\d))?"
)


@dataclass(frozen=True, slots=True)
class Line:
    source: str  # ACCESS, ERROR or the app's name
    text: str
    stamp: float | None  # seconds since the epoch, when the line says


def access_app(text: str) -> str | None:
    """The app an access log line names, None when it names none (answered before routing)."""
    match = _ACCESS_APP.search(text)
    if match is None or match.group(1) in ("", "-"):
        return None
    return match.group(1)


def access_time(text: str) -> float | None:
    match = _ACCESS_TIME.search(text)
    if match is None or match.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second, zone = match.groups()
    offset = int(zone[1:3]) * 60 + int(zone[3:5])
    tz = timezone(timedelta(minutes=-offset if zone[0] == "-" else offset))
    return _epoch(year, _MONTHS[month], day, hour, minute, second, tz)


def leading_time(text: str) -> float | None:
    """The time a line of error.log or of an app's log starts with, if it does."""
    match = _LEADING_TIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    tz = None
    if zone == "Z":
        tz = UTC
    elif zone is not None:
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 60 + int(digits[2:])
        tz = timezone(timedelta(minutes=-offset if zone[0] == "-" else offset))
    return _epoch(year, int(month), day, hour, minute, second, tz)


def _epoch(
    year: str, month: int, day: str, hour: str, minute: str, second: str, tz: timezone | None
) -> float | None:
    try:
        # Without a zone, local time (as error.log and the notes are written).
        moment = datetime(int(year), month, int(day), int(hour), int(minute), int(second), 0, tz)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def stamp_of(source: str, text: str) -> float | None:
    return access_time(text) if source == ACCESS else leading_time(text)


class Picker:
    """Which lines of one source to show: all of them, or those about one app. An error.log
    message of several lines is kept or left whole, so a picker is fed a file's lines in order.

    An access line is about the app its `app=` field names, exactly. An error.log message is
    about app NAME when it starts with `app NAME` or `app 'NAME'` (its process, its socket's
    faults: "app 'x' at ...: socket file missing"), `discovered app NAME` or `NAME:` (held
    requests, retries, tunnels, drains), after sockgate's logger name; an nginx message (nginx
    engine) when it names the app's socket (`unix:SOCKET`, as in "connect() to unix:...")."""

    def __init__(self, source: str, app: str | None = None, socket: str | None = None) -> None:
        self.source = source
        self.app = app
        self.socket = socket
        self._about: re.Pattern[str] | None = None
        self._socket: re.Pattern[str] | None = None
        if app is not None and source == ERROR:
            name = re.escape(app)
            self._about = re.compile(rf"(?:discovered )?app (?:'{name}'|{name})[ :;]|{name}[:;] ")
            if socket:
                self._socket = re.compile(rf"unix:{re.escape(socket)}(?![^\s:\"])")
        self._keeping = False  # whether the error.log message under way is kept

    def __repr__(self) -> str:
        return f"<Picker {self.source} app={self.app}>"

    def fresh(self) -> Picker:
        """The same picker, not in the middle of any message."""
        return Picker(self.source, self.app, self.socket)

    def keep(self, text: str) -> bool:
        if self.app is None or self.source not in (ACCESS, ERROR):
            return True  # an app's own log is all about that app
        if self.source == ACCESS:
            return access_app(text) == self.app
        head = _RECORD.match(text)
        if head is not None:
            self._keeping = self._is_about(text[head.end() :])
        return self._keeping

    def _is_about(self, rest: str) -> bool:
        assert self._about is not None
        logger = _LOGGER.match(rest)
        if logger is not None:
            return self._about.match(rest, logger.end()) is not None
        return self._socket is not None and self._socket.search(rest) is not None


class Sorter:
    """Puts the lines of several sources in time order, each source's lines kept in their
    order. A line without a time of its own counts as written at the last time its source gave
    (the first one it gives, before any); a source that gives none comes first, in the order
    of the sources. Ties go by that order too. The last time of each source is remembered from
    one call to the next, for the lines a follow brings in."""

    def __init__(self, sources: Sequence[str]) -> None:
        self.order = {source: index for index, source in enumerate(sources)}
        self.last: dict[str, float] = {}

    def sort(self, lines: Mapping[str, Sequence[Line]]) -> list[Line]:
        keyed: list[tuple[float, int, int, Line]] = []
        for source, found in lines.items():
            rank = self.order.get(source, len(self.order))
            running = self.last.get(source)
            if running is None:
                running = next((line.stamp for line in found if line.stamp is not None), None)
            for index, line in enumerate(found):
                if line.stamp is not None and (running is None or line.stamp > running):
                    running = line.stamp
                keyed.append((float("-inf") if running is None else running, rank, index, line))
            if running is not None:
                self.last[source] = running
        keyed.sort(key=lambda item: item[:3])
        return [item[3] for item in keyed]


class Painter:
    """`source | text`: the sources' names padded to the longest, in a colour each when asked."""

    def __init__(self, sources: Sequence[str], *, colour: bool) -> None:
        self.width = max((len(source) for source in sources), default=0)
        apps = [source for source in sources if source not in (ACCESS, ERROR)]
        self.colours = {ACCESS: ACCESS_COLOUR, ERROR: ERROR_COLOUR} | {
            app: APP_COLOURS[index % len(APP_COLOURS)] for index, app in enumerate(apps)
        }
        self.colour = colour

    def __repr__(self) -> str:
        return f"<Painter width={self.width} colour={self.colour}>"

    def paint(self, line: Line) -> str:
        code = self.colours.get(line.source)
        if code is None:  # a source that appeared since: the next colour, room for its name
            code = APP_COLOURS[(len(self.colours) - 2) % len(APP_COLOURS)]
            self.colours[line.source] = code
            self.width = max(self.width, len(line.source))
        label = f"{line.source:<{self.width}} |"
        if self.colour:
            label = f"\x1b[{code}m{label}\x1b[0m"
        return f"{label} {line.text}"
