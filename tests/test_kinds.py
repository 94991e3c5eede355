"""The kind of each test (tests/conftest.py, tests/support/kinds.py): every test is unit or
integration, read from its code; a unit test that starts a process all the same fails; and a
socket a test leaves to the garbage collector fails that test, not a later one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import kinds

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("nginx_difference", "unit", "integration", "nginx", "browser", "compiled")


def test_every_test_is_unit_or_integration(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    assert items
    wrong = [
        item.nodeid
        for item in items
        if sum(item.get_closest_marker(kind) is not None for kind in ("unit", "integration")) != 1
    ]
    assert not wrong, f"not exactly one of unit and integration: {wrong}"


def test_the_nginx_engine_needs_nginx_and_processes_need_integration(
    request: pytest.FixtureRequest,
) -> None:
    wrong = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec is not None else None
        marked = {m.name for m in item.iter_markers()}
        if engine == "nginx" and "nginx" not in marked:
            wrong.append(f"{item.nodeid}: the nginx engine without the nginx marker")
        if marked & {"browser", "nginx"} and "integration" not in marked and engine is None:
            wrong.append(f"{item.nodeid}: {marked} but not integration")
    assert not wrong


# Looked up by name, so that the reading of the tests below does not follow them (it follows
# functions named in code, not what a dict holds).
def _starts_one() -> None:
    subprocess.run(["true"], check=True)


def _through_a_helper() -> None:
    _starts_one()


def _through_a_class() -> None:
    _Starter().start()


class _Starter:
    def start(self) -> None:
        os.posix_spawn("/bin/true", ["true"], {})


def _pure() -> list[int]:
    return sorted([3, 1, 2])


SAMPLES = {
    "direct": _starts_one,
    "helper": _through_a_helper,
    "class": _through_a_class,
    "pure": _pure,
}


@pytest.mark.parametrize(
    ("name", "starts"),
    [("direct", True), ("helper", True), ("class", True), ("pure", False)],
)
def test_the_reading_follows_the_suites_own_helpers(name: str, starts: bool) -> None:
    reached = kinds.References().reached([SAMPLES[name]])
    assert kinds.starts_processes(reached) is starts


def test_a_process_started_while_watching_is_noted() -> None:
    guard = kinds.ChildProcessGuard()
    guard.watching = True
    try:
        subprocess.run([sys.executable, "-c", ""], check=True)
    finally:
        guard.watching = False
    started = guard.take()
    assert len(started) == 1, started
    assert started[0].startswith("subprocess.Popen "), started
    subprocess.run([sys.executable, "-c", ""], check=True)
    assert guard.take() == []


INNER_TESTS = """
import socket

from tests.support import kinds


def test_leaves_a_socket_to_the_collector():
    sock = socket.socket()
    cycle = [sock]
    cycle.append(cycle)  # freed only by the collector, not when the test returns


def test_starts_a_process_as_a_unit_test():
    import subprocess  # imported here, where the reading does not see it

    subprocess.run(["true"], check=True)


def test_after():
    pass
"""

INNER_CONFTEST = """
from tests.conftest import pytest_collection_finish, pytest_collection_modifyitems  # noqa: F401
from tests.conftest import pytest_runtest_call, pytest_runtest_setup  # noqa: F401
from tests.conftest import pytest_runtest_teardown  # noqa: F401
"""


def test_a_leak_or_a_process_fails_the_test_that_caused_it(tmp_path: Path) -> None:
    markers = "".join(f"\n    {name}: -" for name in MARKERS)
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\naddopts = --strict-markers\nfilterwarnings = error\nmarkers ={markers}\n"
    )
    (tmp_path / "conftest.py").write_text(textwrap.dedent(INNER_CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-rA"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "PASSED test_inner.py::test_leaves_a_socket_to_the_collector" in out
    assert "ERROR test_inner.py::test_leaves_a_socket_to_the_collector" in out  # its teardown
    assert "left to the garbage collector" in out
    assert "ResourceWarning: unclosed <socket.socket" in out
    assert "FAILED test_inner.py::test_starts_a_process_as_a_unit_test" in out
    assert "a unit test started a process: subprocess.Popen" in out
    assert "PASSED test_inner.py::test_after" in out
