"""One line per exchange in nginx's combined format, plus request time and app name.

Lines are buffered and flushed shortly after, so logging costs no write syscall per request.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TextIO

FLUSH_DELAY = 0.2


class AccessLog:
    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = (
            path.open("a", encoding="utf-8", buffering=1 << 16) if path else None
        )
        self._flush_handle: asyncio.TimerHandle | None = None
        self._stamp_second = -1
        self._stamp = ""

    def log(
        self,
        *,
        client: str,
        request_line: bytes,
        status: int,
        sent: int,
        referer: bytes | None,
        user_agent: bytes | None,
        started: float,
        app: str | None,
    ) -> None:
        if self._file is None:
            return
        now = time.time()
        line = (
            f'{client} - - [{self._timestamp(now)}] "{_text(request_line)}" {status} {sent} '
            f'"{_text(referer) if referer else "-"}" "{_text(user_agent) if user_agent else "-"}" '
            f"rt={now - started:.3f} app={app or '-'}\n"
        )
        self._file.write(line)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
        return self._stamp


def _text(value: bytes) -> str:
    # Like nginx: bytes that could forge a log line or break the quoting are escaped as \xHH.
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}" for b in value
    )
