"""One line per exchange in nginx's combined format, plus request time and app name.

Lines are buffered and flushed shortly after, so logging costs no write syscall per request.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Final

FLUSH_DELAY: Final = 0.2
MAX_BUFFERED: Final = 256  # lines
_SAFE: Final = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
# Escaped values by value: most request lines and user agents come again and again, and a dict
# lookup costs a tenth of the regex. Bounded in count and in the length of what is kept.
_ESCAPED: Final[dict[bytes, bytes]] = {}
_ESCAPED_MAX: Final = 256
_ESCAPED_LONGEST: Final = 256


class AccessLog:
    """Whole lines reach the file in single O_APPEND writes, so several worker processes can
    share it without tearing each other's lines."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = _open(path) if path else None
        self._lines: list[bytes] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._stamp_second = -1
        self._stamp = b""

    def log(
        self,
        client: str,
        request_line: bytes,
        status: int,
        sent: int,
        referer: bytes | None,
        user_agent: bytes | None,
        started: float,
        app: str | None,
        now: float,
    ) -> None:
        """`started` and `now`: time.time() at the request's start and at its end."""
        if self._fd is None:
            return
        if int(now) != self._stamp_second:
            self._timestamp(now)
        # Half up, without round(): a builtin, which compiled code looks up at each call.
        ms = max(0, int((now - started) * 1000 + 0.5))
        # Bytes %-formatting of a literal, with only %s of bytes and %d of ints: compiled, the
        # line is built in one step (a format in a name, or another conversion such as %03d, is
        # left to bytes.__mod__: four times the cost). The request line and headers are logged
        # as they came, without a decode and an encode each. The request time is in whole
        # milliseconds (as nginx's $request_time): seconds, then the milliseconds' three digits.
        self._lines.append(
            b'%s - - [%s] "%s" %d %d "%s" "%s" rt=%d.%s app=%s\n'
            % (
                client.encode(),
                self._stamp,
                _text(request_line),
                status,
                sent,
                _text(referer) if referer else b"-",
                _text(user_agent) if user_agent else b"-",
                ms // 1000,
                (b"%d" % (1000 + ms % 1000))[1:],
                app.encode() if app else b"-",
            )
        )
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._fd is not None and self._lines:
            data = b"".join(self._lines)
            self._lines.clear()
            while data:
                data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def reopen(self) -> None:
        """Write to a fresh open of the file from now on (it may have been rotated away)."""
        if self.path is None or self._fd is None:
            return
        self.flush()
        fd, self._fd = self._fd, _open(self.path)
        os.close(fd)

    def _timestamp(self, now: float) -> bytes:
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
            self._stamp = stamp.encode()
        return self._stamp


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _text(value: bytes) -> bytes:
    # Like nginx: bytes that could forge a log line or break the quoting are escaped as \xHH.
    escaped = _ESCAPED.get(value)
    if escaped is not None:
        return escaped
    if _SAFE.fullmatch(value):
        escaped = value
    else:
        escaped = b"".join(
            bytes((b,)) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else b"\\x%02X" % b
            for b in value
        )
    if len(value) <= _ESCAPED_LONGEST:
        if len(_ESCAPED) >= _ESCAPED_MAX:
            _ESCAPED.clear()
        _ESCAPED[value] = escaped
    return escaped
