"""Reading sockgate's log files for `sockgate logs`: which files there are, their last lines,
and, to follow them, what is appended, tail -F style: a file is polled (every `POLL` seconds),
one that is truncated or replaced (rotated away, then sockgate reopens its logs on a reload) is
read again from its start, and one that appears later (an app's first start) is picked up."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from ..config.model import NAME_PATTERN, Config
from ..errors import SockgateError
from .loglines import ACCESS, ERROR, Line, Picker, Sorter, access_app, stamp_of

POLL: Final = 0.2  # seconds between two looks at the files when following
# The last lines are looked for in the file's last TAIL_CHUNK bytes, then in twice as many, ...
TAIL_CHUNK: Final = 65536
# ... up to this much: an app with few lines in a log of gigabytes shows those of its last 64 MiB
# (and -f what comes next), not a read of the whole file into memory.
TAIL_MOST: Final = 64 * 1024 * 1024
# A line longer than this is passed on in pieces rather than held in memory while following.
MAX_LINE: Final = 16384
# How far back the access log is read for the names of apps it logged (`known_apps`).
NAMES_WINDOW: Final = 1 << 20


class LogFile:
    """One source: its file, where reading got to, and the picker that says which lines show."""

    def __init__(self, source: str, path: Path, picker: Picker) -> None:
        self.source = source
        self.path = path
        self.picker = picker
        self._file: BinaryIO | None = None
        self._partial = b""
        # The time of the last line before those `tail` showed, for the Sorter.
        self.before: float | None = None

    def __repr__(self) -> str:
        at = self._file.tell() if self._file is not None else None
        return f"<LogFile {self.source} {self.path} at={at}>"

    def tail(self, count: int) -> list[Line]:
        """The last `count` lines to show; reading goes on after them (a last line without its
        newline yet is left to `read_new`)."""
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SockgateError(f"cannot read {self.path}: {exc.strerror}") from None
        self._file = file
        end = os.fstat(file.fileno()).st_size
        chunk = TAIL_CHUNK
        while True:
            start = max(0, end - chunk)
            file.seek(start)
            data = file.read(end - start)
            complete = data[: data.rfind(b"\n") + 1]
            texts = _decode(complete.split(b"\n")[:-1])
            if start > 0 and texts:
                texts = texts[1:]  # begins inside a line
            # Pickers are fed in order, from a fresh one: a window may begin inside a message.
            picker = self.picker.fresh()
            kept = [index for index, text in enumerate(texts) if picker.keep(text)]
            if len(kept) >= count or start == 0 or chunk >= TAIL_MOST:
                break  # enough lines, the whole file, or as far back as is worth reading
            chunk *= 2
        self.picker = picker
        shown = kept[-count:] if count else []
        first = shown[0] if shown else len(texts)
        self.before = next(
            (s for s in map(self._stamp, reversed(texts[:first])) if s is not None), None
        )
        file.seek(start + len(complete))
        return [Line(self.source, texts[i], self._stamp(texts[i])) for i in shown]

    def read_new(self) -> list[Line]:
        """The lines to show that were appended since the last look."""
        lines: list[str] = []
        if self._file is None:
            self._open_from_start()
        elif self._replaced():
            lines += self._read_lines()  # what was written to the old file before it went
            self._close()
            self._open_from_start()
        elif os.fstat(self._file.fileno()).st_size < self._file.tell():
            self._file.seek(0)  # truncated
            self._partial = b""
        if self._file is not None:
            lines += self._read_lines()
        return [Line(self.source, text, self._stamp(text)) for text in lines]

    def close(self) -> None:
        self._close()

    def _stamp(self, text: str) -> float | None:
        return stamp_of(self.source, text)

    def _open_from_start(self) -> None:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SockgateError(f"cannot read {self.path}: {exc.strerror}") from None
        self._partial = b""

    def _replaced(self) -> bool:
        """Whether the path now names another file than the one open (rotated away and a new
        one made); while it names none, the old one is read on (sockgate still writes to it)."""
        assert self._file is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._file.fileno())
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def _read_lines(self) -> list[str]:
        assert self._file is not None
        data = self._partial + self._file.read()
        *raw, self._partial = data.split(b"\n")
        while len(self._partial) > MAX_LINE:
            raw.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return [text for text in _decode(raw) if self.picker.keep(text)]

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial = b""


class Logs:
    """The sources `sockgate logs` shows for a config: the access log, the error log and each
    app's own log, all of them or one app's lines."""

    def __init__(self, config: Config, app: str | None = None, flagged: Sequence[str] = ()) -> None:
        self.config = config
        self.app = app
        if not config.logs_dir.is_dir():
            raise SockgateError(
                f"no logs folder at {config.logs_dir}: sockgate writes its logs there once it "
                "ran in that workdir (for another one pass -c PATH or -w DIR)"
            )
        if app is not None:
            known = known_apps(config, flagged)
            if app not in known:
                raise SockgateError(_unknown(app, known, config))
        sockets = {a.name: str(a.socket) for a in config.apps}
        self.files = [
            LogFile(ACCESS, config.access_log, Picker(ACCESS, app)),
            LogFile(ERROR, config.error_log, Picker(ERROR, app, sockets.get(app or ""))),
            *(
                LogFile(name, config.logs_dir / f"{name}.log", Picker(name))
                for name in ([app] if app is not None else app_logs(config))
            ),
        ]
        self.sources = [file.source for file in self.files]
        # Ties (the same second) go to sockgate's messages, then the apps', then the requests'.
        self.sorter = Sorter([ERROR, *self.sources[2:], ACCESS])

    def __repr__(self) -> str:
        return f"<Logs {self.config.logs_dir} app={self.app} sources={self.sources}>"

    def tail(self, count: int) -> list[Line]:
        found = {file.source: file.tail(count) for file in self.files}
        for file in self.files:
            if file.before is not None:
                self.sorter.last[file.source] = file.before
        return self.sorter.sort(found)

    def follow(self, poll: float = POLL) -> Iterator[list[Line]]:
        """The lines appended to every source, a batch at a time in time order, for ever."""
        while True:
            if self.app is None:
                self._add_new_app_logs()
            batch = self.sorter.sort({file.source: file.read_new() for file in self.files})
            if batch:
                yield batch
            time.sleep(poll)  # files give no event to wait on here (tail -f polls too)

    def _add_new_app_logs(self) -> None:
        """An app's log that appeared since (an app of a sockgate run with `--app` and no file
        config, found by -w DIR): read from its start."""
        for name in _log_names(self.config):
            if name not in self.sources:
                self.files.append(LogFile(name, self.config.logs_dir / f"{name}.log", Picker(name)))
                self.sources.append(name)

    def close(self) -> None:
        for file in self.files:
            file.close()


def app_logs(config: Config) -> list[str]:
    """The apps with a log of their own: those sockgate runs (whose log may not exist yet) and
    any other logs/<app>.log there is (an app of an earlier config)."""
    names = [app.name for app in config.supervised]
    names += [name for name in _log_names(config) if name not in names]
    return names


def known_apps(config: Config, flagged: Iterable[str] = ()) -> list[str]:
    """Every app name `sockgate logs APP` accepts: the config's, those given as `--app
    NAME=SOCKET`, those with a log of their own, those in sockets_dir and those the access log
    named lately (in its last NAMES_WINDOW bytes)."""
    names = [app.name for app in config.apps]
    names += [flag.partition("=")[0] for flag in flagged]
    names += _log_names(config)
    if config.sockets_dir is not None and config.sockets_dir.is_dir():
        names += sorted(path.stem for path in config.sockets_dir.glob("*.sock"))
    names += _logged_names(config.access_log)
    return list(dict.fromkeys(name for name in names if NAME_PATTERN.fullmatch(name)))


def _log_names(config: Config) -> list[str]:
    stems = sorted(path.stem for path in config.logs_dir.glob("*.log"))
    return [name for name in stems if name not in (ACCESS, ERROR) and NAME_PATTERN.fullmatch(name)]


def _logged_names(access_log: Path) -> list[str]:
    try:
        with access_log.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(max(0, size - NAMES_WINDOW))
            texts = _decode(file.read().split(b"\n"))
    except OSError:
        return []
    return sorted({name for name in map(access_app, texts) if name is not None})


def _unknown(app: str, known: Sequence[str], config: Config) -> str:
    if not known:
        return (
            f"unknown app {app!r}: no apps are known in {config.workdir} (none in a config, "
            "in logs/ or in the access log)"
        )
    return f"unknown app {app!r}; the known apps: {', '.join(known)}"


def _decode(raw: Iterable[bytes]) -> list[str]:
    return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in raw]
