"""`workers = N`: N processes on one port, supervised, all stopped on Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from sockgate import config
from sockgate.errors import ConfigError
from tests.support.proc import Proxy, write_config
from tests.support.rawapp import RawApp


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the parent pid follows the closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _wait_children(pid: int, want: int, deadline: float = 10) -> set[int]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        kids = _children(pid)
        if len(kids) == want:
            return kids
        time.sleep(0.05)  # the process table gives no event to wait on; bounded by the deadline
    raise AssertionError(f"{pid} has {len(_children(pid))} children, not {want}")


def _config(tmp: Path, app: RawApp, workers: int) -> Path:
    return write_config(
        tmp / "sockgate.toml",
        f'listen = "127.0.0.1:0"\nworkdir = "work"\nworkers = {workers}\n'
        f'[apps.app1]\nsocket = "{app.path}"\n',
    )


def test_two_workers_serve_one_port_and_stop_together(tmp: Path) -> None:
    with RawApp(tmp / "a.sock") as app:
        proxy = Proxy(_config(tmp, app, 2)).start()
        try:
            workers = _wait_children(proxy.proc.pid, 2)  # type: ignore[union-attr]
            proxy.wait_for_output("2 worker processes")  # logged just after the banner
            with httpx.Client() as client:
                for _ in range(20):
                    assert client.get(f"{proxy.url}/app1/x").text == "ok"
            pid_file = tmp / "work" / "sockgate.pid"
            assert pid_file.read_text().strip() == str(proxy.proc.pid)  # type: ignore[union-attr]
        finally:
            code = proxy.stop(signal.SIGINT)
        assert code == 0, proxy.output()
        assert not pid_file.exists()
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_worker_that_dies_is_replaced(tmp: Path) -> None:
    with RawApp(tmp / "a.sock") as app:
        proxy = Proxy(_config(tmp, app, 2)).start()
        try:
            supervisor = proxy.proc.pid  # type: ignore[union-attr]
            first = _wait_children(supervisor, 2)
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            proxy.wait_for_output(rf"worker {victim} exited unasked")
            later = _wait_children(supervisor, 2)
            assert victim not in later
            with httpx.Client() as client:
                for _ in range(10):
                    assert client.get(f"{proxy.url}/app1/").status_code == 200
        finally:
            assert proxy.stop(signal.SIGTERM) == 0, proxy.output()


def test_workers_die_with_a_killed_supervisor(tmp: Path) -> None:
    with RawApp(tmp / "a.sock") as app:
        proxy = Proxy(_config(tmp, app, 2)).start()
        supervisor = proxy.proc.pid  # type: ignore[union-attr]
        workers = _wait_children(supervisor, 2)
        proxy.stop(signal.SIGKILL)
        end = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < end:
            alive = {pid for pid in workers if _running(pid)}
            time.sleep(0.05)  # no event announces another process's death; bounded
        assert not alive, f"orphaned workers: {alive}"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_key_is_validated(tmp: Path) -> None:
    for bad in ("0", '"2"', "true", "65", "1.5"):
        path = write_config(tmp / "bad.toml", f'workers = {bad}\n[apps.a]\nsocket = "/a.sock"\n')
        with pytest.raises(ConfigError, match=r"bad\.toml: workers: .*whole number from 1 to 64"):
            config.load(path)
    good = write_config(tmp / "good.toml", 'workers = 3\n[apps.a]\nsocket = "/a.sock"\n')
    assert config.load(good).workers == 3
