"""Holding requests while an app restarts: its socket missing or refusing, the request waits (per
app `hold`) and goes through when the app is back; after the hold, a named fault, and a page that
tries again for a browser. Only an app that has answered since sockgate started (or one sockgate
runs) is held for: a socket that never answered may be a typo, answered at once with what is
there instead."""

from __future__ import annotations

import concurrent.futures
import difflib
import os
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from sockgate import errors
from sockgate.config import App, Command, Config, Listen
from sockgate.engine.faults import diagnose
from sockgate.engine.shared import _pools
from tests.conftest import ProxyFactory
from tests.support.proc import Proxy
from tests.support.rawapp import RawApp

HTML = {"Accept": "text/html,application/xhtml+xml"}
MISSING = "socket file missing"

NO_HOLD = pytest.mark.nginx_difference(
    "nginx answers 502 at once: it has no way to wait for a socket that is missing or refusing"
)


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on: what an app that crashed leaves behind."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def answered_then_gone(proxy: Proxy, path: Path, before: str = "missing") -> None:
    """The app at `path` answers one request through `proxy`, then stops: its socket file gone
    (`missing`) or left behind with nobody listening (`stale`)."""
    with RawApp(path):
        assert httpx.get(f"{proxy.url}/app1/first", timeout=10).status_code == 200
    if before == "stale":
        stale_socket(path)


class LateApp:
    """Starts a RawApp at `path` after `delay` seconds (the app coming back), stops it at exit."""

    def __init__(self, path: Path, delay: float) -> None:
        self.path = path
        self._app: RawApp | None = None
        self.started = threading.Event()
        self._timer = threading.Timer(delay, self._start)

    @property
    def app(self) -> RawApp:
        assert self._app is not None, "the app has not started"
        return self._app

    def _start(self) -> None:
        self._app = RawApp(self.path).__enter__()
        self.started.set()

    def __enter__(self) -> LateApp:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        if self.started.is_set():
            self.app.__exit__(None, None, None)


@NO_HOLD
@pytest.mark.parametrize("before", ["missing", "stale"])
def test_request_is_held_until_the_app_is_back(
    make_proxy: ProxyFactory, tmp: Path, before: str
) -> None:
    path = tmp / "late.sock"
    proxy = make_proxy({"app1": path})
    answered_then_gone(proxy, path, before)
    with LateApp(path, 0.5) as late:
        started = time.monotonic()
        response = httpx.get(f"{proxy.url}/app1/x?y=1", timeout=10)
        waited = time.monotonic() - started
        assert late.started.is_set()
        assert response.status_code == 200
        assert response.text == "ok"
        assert late.app.requests[-1].target == b"/x?y=1"
        assert 0.4 < waited < 5, waited
    proxy.wait_for_output("holding requests for up to 5s")


@NO_HOLD
def test_held_request_body_arrives_whole(make_proxy: ProxyFactory, tmp: Path) -> None:
    """Nothing of the request went out while the app was away: its body is sent once, whole."""
    path = tmp / "late.sock"
    proxy = make_proxy({"app1": path})
    answered_then_gone(proxy, path)
    body = bytes(range(256)) * 1024
    with LateApp(path, 0.3) as late:
        response = httpx.post(f"{proxy.url}/app1/upload", content=body, timeout=10)
        assert response.status_code == 200
        assert late.app.requests[-1].body == body


@NO_HOLD
def test_a_connection_left_in_the_listen_queue_of_a_stopping_app_is_sent_again(
    make_proxy: ProxyFactory, tmp: Path
) -> None:
    """An app that stops with our new connection still in its listen queue resets it, our
    request unread: the proxy sends it again (to the app's next run), never a 502."""
    path = tmp / "app.sock"
    queue = socket.socket(socket.AF_UNIX)
    queue.bind(str(path))
    queue.listen(8)  # and never accepts: the proxy's connection waits in the queue
    proxy = make_proxy({"app1": path})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.get, f"{proxy.url}/app1/again", timeout=10)
        readable, _, _ = select.select([queue], [], [], 10)
        assert readable, "the proxy never connected"
        queue.close()  # the app stops: the queued connection is reset
        path.unlink()
        with RawApp(path) as app:
            response = answer.result(timeout=10)
            assert response.status_code == 200
            assert [r.target for r in app.requests] == [b"/again"]


@NO_HOLD
@pytest.mark.parametrize("gap", ["missing", "stale"])
def test_app_restarted_under_load_fails_no_request(
    make_proxy: ProxyFactory, tmp: Path, gap: str
) -> None:
    path = tmp / "app.sock"
    first = RawApp(path).__enter__()
    proxy = make_proxy({"app1": path})
    url = f"{proxy.url}/app1/n"
    halfway = threading.Event()

    def client(requests: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=10) as http:
            for i in range(requests):
                if i == requests // 2:
                    halfway.set()
                statuses.append(http.get(url).status_code)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(client, 60) for _ in range(4)]
        assert halfway.wait(20)
        first.__exit__(None, None, None)  # the app goes away (its socket file with it)
        if gap == "stale":
            stale_socket(path)
        with LateApp(path, 0.7) as second:
            statuses = [status for run in runs for status in run.result(timeout=30)]
            assert second.started.is_set()
            assert second.app.requests, "no request reached the restarted app"
    assert statuses == [200] * 240


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault")
def test_hold_zero_answers_at_once(make_proxy: ProxyFactory, tmp: Path) -> None:
    proxy = make_proxy({"app1": {"socket": tmp / "gone.sock", "hold": "0s"}})
    answered_then_gone(proxy, tmp / "gone.sock")
    started = time.monotonic()
    response = httpx.get(f"{proxy.url}/app1/", timeout=10)
    assert response.status_code == 502
    assert time.monotonic() - started < 1
    assert MISSING in response.text


@NO_HOLD
def test_after_the_hold_a_script_gets_502_and_a_browser_a_page_that_retries(
    make_proxy: ProxyFactory, tmp: Path
) -> None:
    sock = tmp / "gone.sock"
    proxy = make_proxy({"app1": {"socket": sock, "hold": "300ms"}})
    answered_then_gone(proxy, sock)
    started = time.monotonic()
    api = httpx.get(f"{proxy.url}/app1/api", timeout=10)
    assert time.monotonic() - started >= 0.3
    assert api.status_code == 502
    assert "Retry-After" not in api.headers
    page = httpx.get(f"{proxy.url}/app1/", headers=HTML, timeout=10)
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "2"
    assert "<meta http-equiv=refresh content=2>" in page.text
    assert MISSING in page.text
    assert str(sock) in page.text
    assert "tries again every 2s" in page.text
    # A form post is not a navigation that may be repeated by reloading.
    post = httpx.post(f"{proxy.url}/app1/form", headers=HTML, content=b"a=1", timeout=10)
    assert post.status_code == 502


def test_a_fault_that_is_not_a_restart_is_not_held(make_proxy: ProxyFactory, tmp: Path) -> None:
    """A regular file where the socket should be will not turn into an app by waiting."""
    path = tmp / "file.sock"
    path.write_text("not a socket")
    proxy = make_proxy({"app1": path})
    started = time.monotonic()
    response = httpx.get(f"{proxy.url}/app1/", timeout=10)
    assert response.status_code == 502
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("reset", [ConnectionResetError, ConnectionAbortedError])
def test_a_connect_reset_counts_as_a_restart(tmp: Path, reset: type[OSError]) -> None:
    """An app that stops with our connection in its queue resets it as it is made: held."""
    error = diagnose(App("a", tmp / "a.sock", "/a/"), reset())
    assert isinstance(error, errors.ConnectReset)
    assert error.restarting


def test_a_refused_connect_to_a_socket_file_gone_since_counts_as_a_restart(tmp: Path) -> None:
    """An app that stops closes its listener (our connect is refused), then removes its socket
    file before we look at what is there: a restart under way, held, not a 502 naming a
    "missing file" as if the path were some other kind of file (seen under load)."""
    error = diagnose(App("a", tmp / "a.sock", "/a/"), ConnectionRefusedError())
    assert isinstance(error, errors.SocketMissing)
    assert error.restarting
    assert "is the app running?" in str(error)


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault or suggest a socket")
def test_a_socket_that_never_answered_is_answered_at_once_with_what_is_there(
    make_proxy: ProxyFactory, tmp: Path
) -> None:
    """A typo in `socket`: no five-second hold per request, and the page names the sockets
    beside it whose names are close (the ones a typo likely meant)."""
    (tmp / "apps").mkdir()
    stale_socket(tmp / "apps" / "myapp.sock")
    stale_socket(tmp / "apps" / "other.sock")
    (tmp / "apps" / "myapp.sock.txt").write_text("a file, not a socket: never suggested")
    typo = tmp / "apps" / "myap.sock"
    proxy = make_proxy({"app1": typo, "app2": tmp / "nofolder" / "app.sock"})
    for _ in range(2):  # and not held the second time either
        started = time.monotonic()
        response = httpx.get(f"{proxy.url}/app1/", timeout=10)
        assert time.monotonic() - started < 1
        assert response.status_code == 502
        assert MISSING in response.text
        assert f"its folder exists; did you mean {tmp / 'apps' / 'myapp.sock'}?" in response.text
    gone = httpx.get(f"{proxy.url}/app2/", timeout=10)
    assert gone.status_code == 502
    assert f"its folder {tmp / 'nofolder'} does not exist" in gone.text
    assert "holding requests" not in proxy.output()


def test_the_suggestions_are_close_sockets_of_the_same_folder(tmp: Path) -> None:
    for name in ("myapp.sock", "my-app.sock", "zzz.sock"):
        stale_socket(tmp / name)
    (tmp / "myapp.socket").mkdir()  # close, but a folder
    error = diagnose(App("a", tmp / "myap.sock", "/a/"), FileNotFoundError())
    assert isinstance(error, errors.SocketMissing)
    assert error.detail == (
        f"its folder exists; did you mean {tmp / 'myapp.sock'} or {tmp / 'my-app.sock'}?"
    )
    none = diagnose(App("a", tmp / "totally-different.sock", "/a/"), FileNotFoundError())
    assert none.detail == "its folder exists; is the app running?"


def test_the_suggestions_are_worked_out_once_per_state_of_the_folder(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request to a mistyped app fails at once: the folder's names are compared again
    only when the folder changes, not per request (a /tmp may hold thousands)."""
    stale_socket(tmp / "myapp.sock")
    settled = time.time_ns() - 10**10  # as if the folder last changed 10 s ago
    os.utime(tmp, ns=(settled, settled))
    compared: list[str] = []
    close = difflib.get_close_matches

    def counting(word: str, *args: object, **kwargs: object) -> list[str]:
        compared.append(word)
        return close(word, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    app = App("a", tmp / "myap.sock", "/a/")
    for _ in range(3):
        assert "did you mean" in diagnose(app, FileNotFoundError()).detail
    assert compared == ["myap.sock"]
    stale_socket(tmp / "myap2.sock")  # the folder changed: looked at again
    assert f"{tmp / 'myap2.sock'}" in diagnose(app, FileNotFoundError()).detail
    assert compared == ["myap.sock", "myap.sock"]


def test_a_reload_that_makes_sockgate_run_the_app_holds_for_it(tmp: Path) -> None:
    """The pool outlives a reload that keeps the socket; an app the reload gives a `command`
    is one sockgate (re)starts from then on: held for, though it never answered."""
    socket_path = tmp / "a.sock"
    before = Config(None, Listen("127.0.0.1", 0), tmp, apps=(App("a", socket_path, "/a/"),))
    (pool,) = _pools(before, {}).values()
    assert not pool.answered
    run = Command(argv=("app",), text="app", cwd=tmp)
    after = Config(
        None, Listen("127.0.0.1", 0), tmp, apps=(App("a", socket_path, "/a/", command=run),)
    )
    (kept,) = _pools(after, {"a": pool}).values()
    assert kept is pool
    assert kept.answered
