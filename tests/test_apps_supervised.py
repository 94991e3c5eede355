"""Apps sockgate runs itself (`command = ...`), with real child processes: readiness, output,
restart with backoff, a crash loop, stop without orphans, on-demand start and idle stop."""

from __future__ import annotations

import itertools
import re
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sockgate import config
from sockgate.errors import ConfigError
from tests.support.proc import Proxy, write_config
from tests.support.procs import (
    SOCKAPP,
    cpu_seconds,
    marked,
    marker,
    sockapp,
    supervised_config,
    wait_log_lines,
    wait_marked,
)


@pytest.fixture
def mark() -> Iterator[str]:
    value = marker()
    yield value
    # Whatever a test did, it leaves no app process behind.
    wait_marked(value, 0)


def test_an_app_is_started_routed_and_its_output_logged(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp("--delay", "0.3")}})
    with Proxy(path) as proxy:
        # The request is held while the app starts, then reaches it.
        response = httpx.get(f"{proxy.url}/a/hello", timeout=10)
        assert response.status_code == 200
        (pid,) = wait_marked(mark, 1)
        assert response.text == str(pid)
        log = tmp / "work" / "logs" / "a.log"
        wait_log_lines(log, "request /hello", 1)
        # The command as it runs: {socket} replaced by the socket's path, in both logs.
        ran = f"started (pid {pid}): {sys.executable} "
        socket_path = tmp / "work" / "sockets" / "a.sock"
        assert f"{ran}{SOCKAPP} {socket_path} --delay 0.3" in log.read_text()
        assert f"{ran}{SOCKAPP} {socket_path} --delay 0.3" in proxy.output()
        assert "{socket}" not in log.read_text() + proxy.output()
        proxy.wait_for_output(r"(?m)^a \| request /hello$")
        proxy.wait_for_output(rf"app a: ready on {tmp}/work/sockets/a.sock")
        sockets = tmp / "work" / "sockets"
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
    assert not (sockets / "a.sock").exists()


def test_a_stale_socket_file_is_replaced(tmp: Path, mark: str) -> None:
    sockets = tmp / "work" / "sockets"
    sockets.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sockets / "a.sock"))  # bound, never listening, left behind
    path = supervised_config(tmp, mark, {"a": {"command": sockapp()}})
    with Proxy(path) as proxy:
        assert httpx.get(f"{proxy.url}/a/", timeout=10).status_code == 200


def test_a_socket_someone_listens_on_is_left_alone(tmp: Path, mark: str) -> None:
    sockets = tmp / "work" / "sockets"
    sockets.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(sockets / "a.sock"))
        other.listen()
        path = supervised_config(tmp, mark, {"a": {"command": sockapp()}})
        with Proxy(path) as proxy:
            proxy.wait_for_output(r"app a: cannot start: another process already listens on")
            assert (sockets / "a.sock").is_socket()
        assert marked(mark) == set()


def test_an_app_that_never_listens_is_reported_with_its_last_output(tmp: Path, mark: str) -> None:
    app = {"command": sockapp("--never-listen"), "ready_timeout": "1s"}
    path = supervised_config(tmp, mark, {"a": app})
    with Proxy(path) as proxy:
        response = httpx.get(f"{proxy.url}/a/", timeout=10)
        assert response.status_code == 503
        assert re.search(
            r"(not ready after|did not accept connections .* within) 1s", response.text
        )
        out = proxy.wait_for_output(r"did not accept connections on .*a\.sock within 1s")
        assert re.search(r"within 1s; its last output:\nstart \d+ [\d.]+\nbooting\n", out)
        proxy.wait_for_output(r"app a did not accept .*; starting it again in 0\.5s")


def test_an_app_that_exits_is_restarted_with_a_growing_backoff(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp("--exit", "3")}})
    with Proxy(path) as proxy:
        starts = wait_log_lines(tmp / "work" / "logs" / "a.log", "start ", 4)
        exits = wait_log_lines(tmp / "work" / "logs" / "a.log", "exit ", 4)
        proxy.wait_for_output(
            r"app a exited with status 3 before accepting connections; "
            r"starting it again in 2s"
        )
        response = httpx.get(f"{proxy.url}/a/", timeout=10)
        assert response.status_code == 503
        assert "exited with status 3" in response.text
    # 0.5 s, 1 s, 2 s between an exit and the next start. At least that from one start line to
    # the next; and from an exit to when sockgate made the next process, at most 0.75 s more
    # (how long the app itself takes to start, seconds on a loaded machine, is not sockgate's).
    stamps = [float(line.split()[2]) for line in starts[:4]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    made_exited = [(float(line.split()[2]), float(line.split()[3])) for line in exits[:4]]
    waits = [made - exited for (_, exited), (made, _) in itertools.pairwise(made_exited)]
    for gap, wait, backoff in zip(gaps, waits, (0.5, 1.0, 2.0), strict=True):
        assert backoff <= gap, gaps
        assert wait < backoff + 0.75, waits


def test_a_crash_loop_does_not_spin_the_cpu(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp("--exit", "1")}})
    with Proxy(path) as proxy:
        assert proxy.proc is not None
        log = tmp / "work" / "logs" / "a.log"
        wait_log_lines(log, "start ", 1)
        before, began = cpu_seconds(proxy.proc.pid), time.monotonic()
        wait_log_lines(log, "start ", 4)  # 0.5 + 1 + 2 seconds of backoff
        used, took = cpu_seconds(proxy.proc.pid) - before, time.monotonic() - began
        assert took >= 3.0
        assert used < 0.1 * took, f"{used:.2f}s of CPU in {took:.1f}s"
        assert len(wait_log_lines(log, "start ", 4)) <= 5


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphans_when_sockgate_stops_or_dies(tmp: Path, mark: str, sig: int) -> None:
    apps = {
        "a": {"command": sockapp("--grandchild")},
        "b": {"command": sockapp(), "stop_timeout": "2s"},
    }
    proxy = Proxy(supervised_config(tmp, mark, apps)).start()
    try:
        for name in apps:
            assert httpx.get(f"{proxy.url}/{name}/", timeout=10).status_code == 200
        wait_marked(mark, 3)  # a, its sleep, b
    finally:
        code = proxy.stop(sig)
    if sig != signal.SIGKILL:
        assert code == 0, proxy.output()
        assert marked(mark) == set(), "apps outlived `sockgate run`"
    wait_marked(mark, 0)


def test_a_stubborn_app_is_killed_after_stop_timeout(tmp: Path, mark: str) -> None:
    command = f"trap '' TERM; exec {sockapp()}"
    apps = {"a": {"command": command, "shell": True, "stop_timeout": "500ms"}}
    proxy = Proxy(supervised_config(tmp, mark, apps)).start()
    try:
        assert httpx.get(f"{proxy.url}/a/", timeout=10).status_code == 200
    finally:
        began = time.monotonic()
        assert proxy.stop(signal.SIGINT) == 0
    assert time.monotonic() - began < 5
    assert "app a: still running 0.5s after SIGTERM: killing it" in proxy.output()
    assert marked(mark) == set()


def test_an_on_demand_app_starts_on_a_request_and_stops_when_idle(tmp: Path, mark: str) -> None:
    app = {"command": sockapp("--delay", "0.3"), "start": "on-demand", "idle_stop": "1s"}
    with Proxy(supervised_config(tmp, mark, {"a": app})) as proxy:
        assert marked(mark) == set()
        with httpx.Client(timeout=10) as client:
            first = client.get(f"{proxy.url}/a/one")
            assert first.status_code == 200
            assert client.get(f"{proxy.url}/a/two").text == first.text
        proxy.wait_for_output(r"app a: stopping after 1s without requests")
        wait_marked(mark, 0)
        again = httpx.get(f"{proxy.url}/a/three", timeout=10)
        assert again.status_code == 200
        assert again.text != first.text  # a new process
        assert proxy.output().count("app a: started") == 2


def test_a_request_under_way_keeps_an_on_demand_app_running(tmp: Path, mark: str) -> None:
    app = {"command": sockapp(), "start": "on-demand", "idle_stop": "300ms"}
    with Proxy(supervised_config(tmp, mark, {"a": app})) as proxy:
        response = httpx.get(f"{proxy.url}/a/slow", timeout=10)  # answered after 1 s
        assert response.status_code == 200
        assert "stopping after" not in proxy.output()
        proxy.wait_for_output(r"app a: stopping after 0\.3s without requests")


def test_workers_start_each_app_once(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp()}}, extra="workers = 2")
    with Proxy(path) as proxy, httpx.Client(timeout=10) as client:
        # Workers do not hold requests while the app starts (its state lives in another process).
        proxy.wait_for_output(r"app a: ready on")
        pids = {client.get(f"{proxy.url}/a/").text for _ in range(10)}
        assert len(pids) == 1
        wait_marked(mark, 1)


# --- config ------------------------------------------------------------------------------------


def _load(tmp: Path, body: str) -> config.Config:
    return config.load(write_config(tmp / "c.toml", body))


def test_command_keys_are_read(tmp: Path) -> None:
    cfg = _load(
        tmp,
        '[apps.notes]\ncommand = "uvicorn notes:app --uds {socket}"\ncwd = "~"\n'
        'env = { NOTES_DEBUG = "1" }\nstart = "on-demand"\nidle_stop = "5m"\n'
        '[apps.sh]\ncommand = "exec app --uds {socket}"\nshell = true\n'
        'socket = "/tmp/with space.sock"\n'
        '[apps.list]\ncommand = ["app", "--uds", "{socket}"]\n',
    )
    notes, sh, listed = cfg.apps
    assert notes.socket == tmp / "sockets" / "notes.sock"
    assert notes.command is not None
    assert notes.command.argv == ("uvicorn", "notes:app", "--uds", str(notes.socket))
    assert notes.command.cwd == Path.home().resolve()
    assert notes.command.env == (("NOTES_DEBUG", "1"),)
    assert notes.command.on_demand
    assert notes.command.idle_stop == 300
    assert sh.command is not None
    assert sh.command.argv == ("/bin/sh", "-c", "exec app --uds '/tmp/with space.sock'")
    assert listed.command is not None
    assert listed.command.argv == ("app", "--uds", str(tmp / "sockets" / "list.sock"))
    assert cfg.supervised == cfg.apps


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('command = ""', r"apps\.a\.command: '': expected a command line"),
        ("command = 3", r"apps\.a\.command: 3: expected a command line"),
        ('command = "a \'b"', r"apps\.a\.command: .*cannot split into arguments"),
        ('command = ["a"]\nshell = true', r"apps\.a\.command: expected a string with shell"),
        ('command = "a"\ncwd = "/nonexistent/x"', r"apps\.a\.cwd: .*expected an existing dir"),
        ('command = "a"\nenv = { X = 1 }', r"apps\.a\.env\.X: expected a string, got integer"),
        ('command = "a"\nstart = "later"', r"apps\.a\.start: 'later': expected one of always"),
        ('command = "a"\nidle_stop = "5m"', r"apps\.a\.idle_stop: only meaningful with start"),
        ('command = "a"\nready_timeout = "0s"', r"apps\.a\.ready_timeout: .*greater than zero"),
        ('socket = "/a.sock"\ncwd = "/"', r"apps\.a\.cwd: only meaningful with `command`"),
        ("prefix = '/a/'", r"apps\.a\.socket: missing: .*or a `command`"),
    ],
)
def test_command_mistakes_are_named(tmp: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"c\.toml: {message}"):
        _load(tmp, f"[apps.a]\n{body}\n")


def test_on_demand_needs_the_builtin_engine_in_one_process(tmp: Path) -> None:
    app = '[apps.a]\ncommand = "a"\nstart = "on-demand"\n'
    for extra in ('engine = "nginx"', "workers = 2"):
        with pytest.raises(ConfigError, match=r"apps\.a\.start: 'on-demand': expected 'always'"):
            _load(tmp, f"{extra}\n{app}")
    with pytest.raises(ConfigError, match=r"apps\.a\.start"):
        config.load(write_config(tmp / "c.toml", app), engine="nginx")
