"""The status of apps sockgate runs (`command = ...`), with real processes: status.json, the
event stream and the control socket show each app's process, and follow it through a crash and
its restart. Built-in engine only (the nginx engine has no status page)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import Proxy, run_sockgate
from tests.support.procs import marker, sockapp, supervised_config, wait_marked
from tests.support.status import Doc, StatusEvents, app_row, status_json


@pytest.fixture
def mark() -> Iterator[str]:
    value = marker()
    yield value
    wait_marked(value, 0)  # whatever a test did, it leaves no app process behind


def process(doc: Doc, name: str) -> Doc:
    proc: Doc = app_row(doc, name)["process"]
    return proc


def test_a_supervised_app_is_shown_running_then_restarted_after_a_kill(
    tmp: Path, mark: str
) -> None:
    apps = {"a": {"command": sockapp()}}
    path = supervised_config(tmp, mark, apps)
    with path.open("a") as extra:  # an app sockgate does not run: no process
        extra.write(f'[apps.plain]\nsocket = "{tmp / "plain.sock"}"\n')
    with Proxy(path) as proxy:
        proxy.wait_for_output(r"app a: ready on")
        (pid,) = wait_marked(mark, 1)
        doc = status_json(proxy.port)
        assert process(doc, "a") == {
            "state": "running",
            "pid": pid,
            "starts": 1,
            "last_exit": None,
            "next_start_in": None,
            "on_demand": False,
        }
        assert app_row(doc, "a")["state"] == "up"  # the probed socket, as before
        assert app_row(doc, "plain")["process"] is None

        with StatusEvents(proxy.port) as events:
            events.next_doc()
            os.kill(pid, signal.SIGKILL)
            again = events.wait_for(
                lambda d: process(d, "a")["starts"] == 2 and process(d, "a")["state"] == "running",
                "the app running again after its restart",
            )
        restarted = process(again, "a")
        (new_pid,) = wait_marked(mark, 1)
        assert restarted["pid"] == new_pid != pid
        assert restarted["last_exit"] == "ended by SIGKILL"
        proxy.wait_for_output(r"app a ended by SIGKILL; starting it again in 0\.5s")

        # The control socket says the same, as JSON and in words.
        shown = run_sockgate("status", "--json", "-c", str(path), cwd=tmp)
        assert shown.returncode == 0, shown.stderr
        assert process(json.loads(shown.stdout), "a") == restarted
        table = run_sockgate("status", "-c", str(path), cwd=tmp)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        at = lines.index("apps sockgate runs:")
        assert lines[at + 1] == (
            f"  a  running, pid {new_pid}, started 2 times; last exit: ended by SIGKILL"
        )
        assert not any("plain" in line for line in lines[at:])


def test_a_crash_looping_app_shows_its_backoff_and_next_start(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp("--exit", "3")}})
    with Proxy(path) as proxy, StatusEvents(proxy.port) as events:
        doc = events.wait_for(
            lambda d: process(d, "a")["state"] == "backoff" and process(d, "a")["starts"] >= 2,
            "the app in backoff after its second start",
        )
        shown = process(doc, "a")
        assert shown["pid"] is None
        assert shown["last_exit"] == "exited with status 3 before accepting connections"
        # The backoff after start n is 0.5 * 2**(n-1) seconds, and some of it has passed.
        assert 0 <= shown["next_start_in"] <= 0.5 * 2 ** (shown["starts"] - 1)
        assert app_row(doc, "a")["state"] in ("missing", "stale")


def test_with_workers_the_apps_run_elsewhere_and_the_status_says_so(tmp: Path, mark: str) -> None:
    path = supervised_config(tmp, mark, {"a": {"command": sockapp()}}, extra="workers = 2")
    with Proxy(path) as proxy:
        proxy.wait_for_output(r"app a: ready on")
        shown = run_sockgate("status", "--json", "-c", str(path), cwd=tmp)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert process(doc, "a") == {
            "state": "elsewhere",
            "pid": None,
            "starts": None,
            "last_exit": None,
            "next_start_in": None,
            "on_demand": False,
        }
        table = run_sockgate("status", "-c", str(path), cwd=tmp).stdout
        assert "  a  run by the apps process" in table.splitlines()
