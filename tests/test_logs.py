"""`sockgate logs [APP] [-f]`: the access log, the error log and the output of the apps sockgate
runs, each line after its source, one app's lines alone, the last N, in colour when asked, and
followed live (appended lines, a truncated or replaced file, a file that appears later)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sockgate.status import logfiles
from sockgate.status.loglines import ACCESS, ERROR, Line, Picker, Sorter
from tests.conftest import RawFactory
from tests.support.proc import Proxy, free_port, run_sockgate, write_config
from tests.support.procs import marker, sockapp, wait_marked

# Handmade logs of a workdir, in the formats sockgate writes them (times in UTC: TZ=UTC).
ACCESS_LOG = """\
127.0.0.1 - - [01/May/2024:12:00:01 +0000] "GET /a/x HTTP/1.1" 200 2 "-" "curl" rt=0.001 app=a
127.0.0.1 - - [01/May/2024:12:00:03 +0000] "GET /ab/x HTTP/1.1" 200 2 "-" "curl" rt=0.001 app=ab
127.0.0.1 - - [01/May/2024:12:00:05 +0000] "GET /a/y HTTP/1.1" 200 2 "-" "curl" rt=0.001 app=a
"""
ERROR_LOG = """\
2024/05/01 12:00:00 [INFO] sockgate.engine.serve: listening on http://127.0.0.1:8080/ with 2 apps
2024/05/01 12:00:02 [ERROR] sockgate.apps.managed: app a did not accept; its last output:
booting
still booting
2024/05/01 12:00:04 [ERROR] sockgate.exchange.forward: app 'ab' at /s/ab.sock: socket file missing
2024/05/01 12:00:06 [INFO] sockgate.engine.upstream: a: back
"""
APP_LOG = """\
[sockgate 2024/05/01 12:00:00] started (pid 1): app
hello
[sockgate 2024/05/01 12:00:04] started (pid 2): app
request /y
"""
PREFIX = re.compile(r"^(access|error |a     ) \| ")


@pytest.fixture
def workdir(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workdir whose logs/ holds ACCESS_LOG, ERROR_LOG and APP_LOG (app `a`)."""
    monkeypatch.setenv("TZ", "UTC")
    logs = tmp / "logs"
    logs.mkdir()
    (logs / "access.log").write_text(ACCESS_LOG)
    (logs / "error.log").write_text(ERROR_LOG)
    (logs / "a.log").write_text(APP_LOG)
    return tmp


def logs(workdir: Path, *args: str) -> list[str]:
    done = run_sockgate("logs", "-w", str(workdir), *args, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def access(n: int) -> str:
    return "access | " + ACCESS_LOG.splitlines()[n]


def error(n: int) -> str:
    return "error  | " + ERROR_LOG.splitlines()[n]


def app(n: int) -> str:
    return "a      | " + APP_LOG.splitlines()[n]


def test_the_last_lines_of_every_source_in_time_order(workdir: Path) -> None:
    # Lines without a time of their own (app output, the rest of an error message) stay after
    # the last line of their source that has one.
    assert logs(workdir) == [
        error(0),
        app(0),
        app(1),
        access(0),
        error(1),
        error(2),
        error(3),
        access(1),
        error(4),
        app(2),
        app(3),
        access(2),
        error(5),
    ]


def test_an_app_alone_is_its_access_lines_its_error_messages_and_its_output(
    workdir: Path,
) -> None:
    # `a` is not `ab`: the access line's app= field and the message's app name, exactly; a
    # message of several lines comes whole.
    assert logs(workdir, "a") == [
        app(0),
        app(1),
        access(0),
        error(1),
        error(2),
        error(3),
        app(2),
        app(3),
        access(2),
        error(5),
    ]
    assert logs(workdir, "ab") == [access(1), error(4)]


def test_n_is_how_many_last_lines_of_each_source(workdir: Path) -> None:
    assert logs(workdir, "-n", "1") == [app(3), access(2), error(5)]
    # For `a`: of the error log, the last line of a message and `a: back`.
    assert logs(workdir, "--lines", "2", "a") == [
        access(0),
        error(3),
        app(2),
        app(3),
        access(2),
        error(5),
    ]
    assert logs(workdir, "-n", "0") == []


def test_an_unknown_app_names_the_known_ones(workdir: Path) -> None:
    done = run_sockgate("logs", "-w", str(workdir), "nope", cwd=workdir)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "sockgate: unknown app 'nope'; the known apps: a, ab\n"


def test_a_missing_logs_folder_is_named(tmp: Path) -> None:
    done = run_sockgate("logs", cwd=tmp)
    assert done.returncode == 2
    assert done.stderr.startswith(f"sockgate: no logs folder at {tmp / 'logs'}: ")
    assert "pass -c PATH or -w DIR" in done.stderr


def test_colour_is_asked_for_or_given_to_a_terminal_only(workdir: Path) -> None:
    coloured = logs(workdir, "--color", "always")
    painted = [re.match(r"\x1b\[(\d+)m(\w+) *\|\x1b\[0m ", line) for line in coloured]
    prefixes = {match.groups() if match else None for match in painted}
    assert prefixes == {("34", "access"), ("31", "error"), ("36", "a")}
    plain = logs(workdir)
    assert [re.sub(r"\x1b\[\d+m", "", line) for line in coloured] == plain
    # Not a terminal (captured here), or never: no colour.
    for lines in (plain, logs(workdir, "--color", "never")):
        assert all(PREFIX.match(line) for line in lines)
        assert not any("\x1b" in line for line in lines)


# Ctrl-C as a terminal delivers it: whatever this test process inherited (a blocked or ignored
# SIGINT, which exec passes on), the command starts with SIGINT unblocked and at its default.
AS_IN_A_TERMINAL = (
    "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable, "
    "*sys.argv[1:]])"
)


class Follower:
    """`sockgate logs -f ...` running, its stdout read line by line with a deadline."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AS_IN_A_TERMINAL, "-m", "sockgate", "logs", "-f", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.lines: list[str] = []
        self._buffer = b""

    def wait_for(self, pattern: str, deadline: float = 10) -> str:
        """Until a line printed that no call returned yet matches; returns (and takes) it."""
        assert self.proc.stdout is not None
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        while True:
            for index, line in enumerate(self.lines):
                if regex.search(line):
                    return self.lines.pop(index)
            left = end - time.monotonic()
            readable, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not readable:
                raise AssertionError(f"no line matching {pattern!r} in {deadline}s: {self.lines}")
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                raise AssertionError(f"logs -f ended ({self.proc.wait()}): {self.lines}")
            *complete, self._buffer = (self._buffer + data).split(b"\n")
            self.lines += [line.decode() for line in complete]

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and what it wrote to stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.proc.returncode, err.decode()


@pytest.fixture
def follower() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for each in started:
        if each.proc.poll() is None:
            each.proc.kill()
        each.proc.communicate()


def test_follow_reads_a_file_again_when_truncated_or_replaced_and_new_files(
    workdir: Path, follower: list[Follower]
) -> None:
    follow = Follower("-w", str(workdir), cwd=workdir)
    follower.append(follow)
    assert follow.wait_for(r"^error  \| .* a: back$") == error(5)  # the last line shown first
    assert follow.lines == logs(workdir)[:-1]
    follow.lines.clear()
    logs_dir = workdir / "logs"

    (logs_dir / "a.log").write_text("again\n")  # truncated: shorter than where reading got to
    assert follow.wait_for(r"^a  ") == "a      | again"

    (logs_dir / "error.log").rename(logs_dir / "error.log.1")  # rotated: a new file
    with (logs_dir / "error.log.1").open("a") as old:
        old.write("2024/05/01 12:00:07 [INFO] sockgate.x: last in the old file\n")
    (logs_dir / "error.log").write_text("2024/05/01 12:00:08 [INFO] sockgate.x: first\n")
    assert (
        follow.wait_for(r"^error")
        == "error  | 2024/05/01 12:00:07 [INFO] sockgate.x: last in the old file"
    )
    assert follow.wait_for(r"^error") == "error  | 2024/05/01 12:00:08 [INFO] sockgate.x: first"

    (logs_dir / "b.log").write_text("b started\n")  # an app's log that was not there
    assert follow.wait_for(r"^b ") == "b      | b started"
    assert follow.interrupt() == (0, "")


@pytest.fixture
def mark() -> Iterator[str]:
    value = marker()
    yield value
    wait_marked(value, 0)  # no app process is left behind


def proxy_config(tmp: Path, mark: str, other: Path, engine: str = "builtin") -> Path:
    """App `a` run by sockgate, `b` on `other`, `c` on a socket that is not there."""
    port = free_port() if engine == "nginx" else 0
    return write_config(
        tmp / "sockgate.toml",
        f"""\
listen = "127.0.0.1:{port}"
workdir = "work"
engine = "{engine}"
[apps.a]
command = "{sockapp()}"
env = {{ SGTEST_MARK = "{mark}" }}
[apps.b]
socket = "{other}"
[apps.c]
socket = "{tmp}/c.sock"
""",
    )


def test_the_logs_of_a_real_run_and_one_app_alone(
    tmp: Path, mark: str, raw_app: RawFactory, engine: str
) -> None:
    path = proxy_config(tmp, mark, raw_app(name="b").path, engine)
    with Proxy(path, engine=engine) as proxy:
        proxy.wait_for_output(r"app a: ready on ")  # nginx's requests are not held for it
        for target in ("/a/hello", "/b/x", "/c/", "/a/two"):
            httpx.get(f"{proxy.url}{target}", timeout=10)
    # Stopped: every log is written out.

    # Enough lines for the start-up ones too (a line per app, and nginx's own notices).
    shown = run_sockgate("logs", "-n", "100", "-c", str(path), cwd=tmp)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert all(PREFIX.match(line) for line in lines), lines
    for pattern in (
        r'^access \| 127\.0\.0\.1 .*"GET /a/hello HTTP/1\.1" 200 .* app=a$',
        r'^access \| .*"GET /b/x HTTP/1\.1" 200 .* app=b$',
        r"^error  \| .* app a: started \(pid \d+\)",
        r"^error  \| .* (listening on|starting nginx for) http://",
        r"^a      \| request /hello$",
        r"^a      \| \[sockgate [\d/: ]+\] started \(pid \d+\)",
    ):
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)

    alone = run_sockgate("logs", "a", "-c", str(path), cwd=tmp).stdout.splitlines()
    assert {line[:9] for line in alone} == {"access | ", "error  | ", "a      | "}
    assert all(line.endswith(" app=a") for line in alone if line.startswith("access"))
    assert all(" app a" in line for line in alone if line.startswith("error"))
    assert "a      | request /two" in alone

    c = sorted(run_sockgate("logs", "c", "-c", str(path), cwd=tmp).stdout.splitlines())
    assert len(c) == 2, c
    assert re.match(r'access \| .*"GET /c/ HTTP/1\.1" 502 .* app=c$', c[0])
    # The built-in engine names the app; nginx, its socket.
    missing = r"app 'c' at \S+/c\.sock: socket file missing|connect\(\) to unix:\S+/c\.sock failed"
    assert re.match(rf"error  \| .* ({missing})", c[1])

    last = run_sockgate("logs", "a", "-n", "1", "-c", str(path), cwd=tmp).stdout.splitlines()
    assert sorted(line[:6] for line in last) == ["a     ", "access", "error "], last
    assert any('"GET /a/two HTTP/1.1"' in line for line in last)


def test_follow_prints_a_request_made_after_it_started(
    tmp: Path, mark: str, raw_app: RawFactory, follower: list[Follower]
) -> None:
    path = proxy_config(tmp, mark, raw_app(name="b").path)
    with Proxy(path) as proxy:
        follow = Follower("-c", str(path), cwd=tmp)
        follower.append(follow)
        follow.wait_for(r"^error  \| .* listening on http://")
        httpx.get(f"{proxy.url}/a/followed", timeout=10)
        follow.wait_for(r'^access \| .*"GET /a/followed HTTP/1\.1" 200 .* app=a$')
        follow.wait_for(r"^a      \| request /followed$")
        assert follow.interrupt() == (0, "")


# --- the rules alone ------------------------------------------------------------------------


def test_an_error_message_about_an_app_is_picked_by_its_name_or_its_socket() -> None:
    picker = Picker(ERROR, "a", "/s/a.sock")
    about = [
        "2024/05/01 12:00:00 [INFO] sockgate.apps.managed: app a: started (pid 1): x",
        "2024/05/01 12:00:00 [INFO] sockgate.apps.discovery: discovered app a at /a/ -> /s/a.sock",
        "2024/05/01 12:00:00 [ERROR] sockgate.proc.workers: worker 7: app 'a' at /s/a.sock: x",
        "2024/05/01 12:00:00 [INFO] sockgate.engine.upstream: a: back",
        "2024/05/01 12:00:00 [error] 9#0: *1 connect() to unix:/s/a.sock failed (2: No such file)",
    ]
    other = [
        "2024/05/01 12:00:00 [INFO] sockgate.apps.managed: app ab: started (pid 1): x",
        "2024/05/01 12:00:00 [INFO] sockgate.engine.upstream: ab: back",
        "2024/05/01 12:00:00 [error] 9#0: *1 connect() to unix:/s/a.sock2 failed (2: No such)",
        "2024/05/01 12:00:00 [INFO] sockgate.x: the app a is mentioned in passing",
    ]
    assert [picker.keep(text) for text in about] == [True] * len(about)
    assert [picker.keep(text) for text in other] == [False] * len(other)
    access_picker = Picker(ACCESS, "a")
    assert access_picker.keep(ACCESS_LOG.splitlines()[0])
    assert not access_picker.keep(ACCESS_LOG.splitlines()[1])


def test_lines_without_a_time_follow_the_last_time_of_their_source() -> None:
    sorter = Sorter(["x", "y"])
    first = {"x": [Line("x", "x1", 10.0), Line("x", "x2", None)], "y": [Line("y", "y1", 5.0)]}
    assert [line.text for line in sorter.sort(first)] == ["y1", "x1", "x2"]
    # Later: an x line without a time still counts as written at 10, before y's 11.
    later = {"x": [Line("x", "x3", None)], "y": [Line("y", "y2", 11.0)]}
    assert [line.text for line in sorter.sort(later)] == ["x3", "y2"]


def test_looking_back_for_an_apps_lines_stops_at_a_bound(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rare app in a huge log: its last lines are looked for in the last TAIL_MOST bytes, not
    by reading the whole file into memory."""
    log = tmp / "access.log"
    rare = '127.0.0.1 - - [01/May/2024:12:00:00 +0000] "GET /a/ HTTP/1.1" 200 2 app=a\n'
    other = '127.0.0.1 - - [01/May/2024:12:00:01 +0000] "GET /b/ HTTP/1.1" 200 2 app=b\n'
    log.write_text(rare + other * 4000)  # ~300 kB, the rare line at its start
    monkeypatch.setattr(logfiles, "TAIL_CHUNK", 1024)
    monkeypatch.setattr(logfiles, "TAIL_MOST", 64 * 1024)
    bounded = logfiles.LogFile(ACCESS, log, Picker(ACCESS, "a"))
    assert bounded.tail(5) == []
    bounded.close()
    monkeypatch.setattr(logfiles, "TAIL_MOST", 1024 * 1024)
    whole = logfiles.LogFile(ACCESS, log, Picker(ACCESS, "a"))
    assert [line.text for line in whole.tail(5)] == [rare.rstrip("\n")]
    whole.close()
