"""What a supervised app prints: to `logs/<app>.log` as it comes, to the console line by line
(through the `sockgate.output` logger, which logsetup prefixes with the app's name), and the last
lines kept for error messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

output_log = logging.getLogger("sockgate.output")

READ_SIZE = 65536
# A line longer than this is passed on in pieces rather than held in memory.
MAX_LINE = 16384
TAIL_LINES = 20


class AppOutput:
    """The app's log file, open for appending while sockgate runs, and its last lines."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._file = _open(path)

    def __repr__(self) -> str:
        return f"<AppOutput {self.name} {self.path}>"

    def note(self, message: str) -> None:
        """A line of sockgate's own about the app (started, exited, ...) in the app's log."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        self._write(f"[sockgate {stamp}] {message}\n".encode())

    async def pump(self, reader: asyncio.StreamReader) -> None:
        """Pass everything the app writes on until it closes its output."""
        self.tail.clear()
        partial = b""
        while data := await reader.read(READ_SIZE):
            self._write(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                self._line(line)
            while len(partial) > MAX_LINE:
                self._line(partial[:MAX_LINE])
                partial = partial[MAX_LINE:]
        if partial:
            self._line(partial)

    def last_lines(self, count: int = TAIL_LINES) -> str:
        return "\n".join(list(self.tail)[-count:])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _line(self, raw: bytes) -> None:
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        self.tail.append(text)
        output_log.info("%s", text, extra={"app": self.name})

    def _write(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "%s: cannot write %s: %s", self.name, self.path, exc
            )
            self.close()


def _open(path: Path) -> BinaryIO | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("ab")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot open %s: %s", path, exc)
        return None
