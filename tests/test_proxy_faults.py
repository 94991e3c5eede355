"""Items 7 (read timeout) and 8: every socket fault is named, on a 502/504 page (text, or HTML for
browsers) and in error.log; a response the app cuts short is never passed on as complete; the
proxy stays up and serves the other apps after each fault."""

from __future__ import annotations

import asyncio
import html
import os
import pwd
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import RawClient
from tests.support.proc import Proxy, wait_for_line, write_config
from tests.support.rawapp import Conn, Handler, RawApp

MISSING = "socket file missing"
NOT_A_SOCKET = "not a socket"
STALE = "nothing listening (stale socket file)"
DENIED = "permission denied"
CLOSED_EARLY = "app closed the connection without answering"
NOT_HTTP = "app answered something that is not valid HTTP"
TIMED_OUT = "app did not answer in time"
CUT_SHORT = "app cut the response short"


def error_log(proxy: Proxy) -> Path:
    return proxy.config_path.parent / "work" / "logs" / "error.log"


def assert_fault(
    proxy: Proxy,
    app: str,
    sock: Path,
    fault: str,
    *,
    status: int = 502,
    details: tuple[str, ...] = (),
) -> None:
    """The text page, the HTML page and the error.log line all name the app, socket and fault
    (and `details`, such as what the path is instead of a socket)."""
    url = f"{proxy.url}/{app}/page?q=1"
    text = httpx.get(url, timeout=30)
    assert text.status_code == status, text.text
    assert text.headers["content-type"].startswith("text/plain")
    assert text.headers["connection"] == "close"
    lines = text.text.splitlines()
    assert lines[0].startswith(f"{status} "), text.text
    assert fault in lines[0], text.text
    assert f"app: {app}" in lines, text.text
    assert f"socket: {sock}" in lines, text.text
    for detail in details:
        assert detail in text.text, text.text

    page = httpx.get(url, headers={"Accept": "text/html,application/xhtml+xml"}, timeout=30)
    # A browser finding an app down (or restarting) gets 503 and a page that tries again.
    page_status = 503 if fault in (MISSING, STALE) else status
    assert page.status_code == page_status
    assert page.headers["content-type"].startswith("text/html")
    body = page.text
    assert body.lstrip().lower().startswith("<!doctype html>"), body
    for needed in (str(page_status), fault, app, str(sock), *details):
        assert html.escape(needed) in body, (needed, body)

    line = wait_for_line(error_log(proxy), f"{sock}: {fault}")
    assert repr(app) in line or f" {app} " in line, line
    for detail in details:
        assert detail in line, line


def assert_still_serving(proxy: Proxy, prefix: str = "ok") -> None:
    """The proxy survived the fault: a normal request to another app works."""
    response = httpx.get(f"{proxy.url}/{prefix}/after", timeout=30)
    assert response.status_code == 200
    assert response.text == "ok"


def with_ok_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, down: Path, timeouts: str = ""
) -> Proxy:
    ok = raw_app(name="ok")
    # Without holding: these tests are about the answer a fault gets (tests/test_hold.py holds).
    return make_proxy({"down": {"socket": down, "hold": "0s"}, "ok": ok.path}, timeouts=timeouts)


# --- connecting ---------------------------------------------------------------------------------


def stale_socket(path: Path) -> Path:
    """A socket file nobody listens on: bound, then closed without unlinking."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def missing_file(tmp: Path) -> Path:
    return tmp / "none.sock"


def missing_directory(tmp: Path) -> Path:
    return tmp / "nodir" / "app.sock"


def regular_file(tmp: Path) -> Path:
    path = tmp / "file.sock"
    path.write_text("not a socket")
    return path


def directory(tmp: Path) -> Path:
    path = tmp / "dir.sock"
    path.mkdir()
    return path


def stale(tmp: Path) -> Path:
    return stale_socket(tmp / "stale.sock")


CONNECT_FAULTS: dict[str, tuple[Callable[[Path], Path], str, tuple[str, ...]]] = {
    "missing-file": (missing_file, MISSING, ()),
    "missing-directory": (missing_directory, MISSING, ("folder", "does not exist")),
    "regular-file": (regular_file, NOT_A_SOCKET, ("regular file",)),
    "directory": (directory, NOT_A_SOCKET, ("directory",)),
    "stale-socket": (stale, STALE, ()),
}


@pytest.mark.nginx_difference("nginx's own 502 page does not name the app, the socket or the fault")
@pytest.mark.parametrize(
    ("make_path", "fault", "details"), list(CONNECT_FAULTS.values()), ids=list(CONNECT_FAULTS)
)
def test_connect_fault_is_named(
    make_proxy: ProxyFactory,
    raw_app: RawFactory,
    tmp: Path,
    make_path: Callable[[Path], Path],
    fault: str,
    details: tuple[str, ...],
) -> None:
    sock = make_path(tmp)
    proxy = with_ok_app(make_proxy, raw_app, sock)
    assert_fault(proxy, "down", sock, fault, details=details)
    assert_still_serving(proxy)


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault")
def test_stale_socket_page_differs_from_missing(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    """The two faults a user confuses most get different words: the fault names are not just
    one generic message with the path filled in."""
    stale_socket(tmp / "stale.sock")
    ok = raw_app(name="ok")
    proxy = make_proxy(
        {
            "stale": {"socket": tmp / "stale.sock", "hold": "0s"},
            "gone": {"socket": tmp / "gone.sock", "hold": "0s"},
            "ok": ok.path,
        }
    )
    stale = httpx.get(f"{proxy.url}/stale/").text
    gone = httpx.get(f"{proxy.url}/gone/").text
    assert STALE in stale
    assert MISSING not in stale
    assert MISSING in gone
    assert STALE not in gone


# --- an app that comes up after the proxy -------------------------------------------------------


def test_app_started_after_the_proxy_is_served(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    sock = tmp / "late.sock"
    proxy = with_ok_app(make_proxy, raw_app, sock)
    assert httpx.get(f"{proxy.url}/down/").status_code == 502
    late = raw_app(name="late")
    assert late.path == sock
    response = httpx.get(f"{proxy.url}/down/now?x=1")
    assert response.status_code == 200
    assert response.text == "ok"
    assert late.requests[-1].target == b"/now?x=1"


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault")
def test_app_restarted_over_its_stale_socket_is_served(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    sock = tmp / "late.sock"
    stale_socket(sock)
    proxy = with_ok_app(make_proxy, raw_app, sock)
    first = httpx.get(f"{proxy.url}/down/")
    assert first.status_code == 502
    assert STALE in first.text
    raw_app(name="late")  # asyncio replaces the stale socket file
    assert httpx.get(f"{proxy.url}/down/").status_code == 200


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault")
def test_app_that_goes_away_is_reported_then_served_again(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    """A pooled connection to an app that stopped must not hide the fault, nor stay broken."""
    app = RawApp(tmp / "flaky.sock").__enter__()
    try:
        proxy = with_ok_app(make_proxy, raw_app, app.path)
        assert httpx.get(f"{proxy.url}/down/").status_code == 200
    finally:
        app.__exit__(None, None, None)
    gone = httpx.get(f"{proxy.url}/down/")
    assert gone.status_code == 502
    assert MISSING in gone.text
    with RawApp(tmp / "flaky.sock"):
        assert httpx.get(f"{proxy.url}/down/").status_code == 200


# --- permission denied: the proxy must run as an unprivileged user ----------------------------

# Root bypasses file permissions, so the proxy is started as root, imports everything it needs
# (the interpreter lives under /root, which `nobody` cannot read), then drops to the given user
# before it reads its config.
AS_USER = """\
import difflib, encodings.idna, html, logging.handlers, os, pwd, sys
import httptools
try:
    import uvloop
except ImportError:
    pass
import sockgate.cli, sockgate.http.pages, sockgate.engine.client
import sockgate.engine.server, sockgate.engine.upstream
uid, gid = int(sys.argv[1]), int(sys.argv[2])
if os.geteuid() != uid:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
sockgate.cli.main(sys.argv[3:], prog_name="sockgate")
"""


def unprivileged() -> tuple[int, int]:
    """The uid and gid the proxy runs as: `nobody` when the tests run as root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


@pytest.fixture
def unprivileged_proxy(tmp: Path) -> Iterator[Callable[[dict[str, Path]], Proxy]]:
    uid, gid = unprivileged()
    started: list[Proxy] = []

    def start(apps: dict[str, Path]) -> Proxy:
        tmp.chmod(0o755)  # the config and the sockets' directories must be reachable
        work = tmp / "work"
        work.mkdir(exist_ok=True)
        os.chown(work, uid, gid)
        body = ['listen = "127.0.0.1:0"', 'workdir = "work"']
        for name, path in apps.items():
            body += [f"[apps.{name}]", f'socket = "{path}"']
        config = write_config(tmp / "sockgate.toml", "\n".join(body) + "\n")
        proxy = Proxy(config)
        proxy.args = [
            sys.executable,
            "-c",
            AS_USER,
            str(uid),
            str(gid),
            "run",
            "-c",
            str(config),
        ]
        started.append(proxy.start())
        return proxy

    yield start
    for proxy in started:
        assert proxy.stop() == 0


def open_to_all(app: RawApp) -> RawApp:
    app.path.chmod(0o777)  # connecting needs write permission on the socket file
    return app


def owner_name(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def test_permission_denied_on_the_socket_file(
    unprivileged_proxy: Callable[[dict[str, Path]], Proxy], raw_app: RawFactory
) -> None:
    uid, _ = unprivileged()
    private = raw_app(name="private")
    private.path.chmod(0o600 if os.geteuid() == 0 else 0o000)
    ok = open_to_all(raw_app(name="ok"))
    proxy = unprivileged_proxy({"down": private.path, "ok": ok.path})
    mode = stat.filemode(private.path.stat().st_mode)
    details = (mode, owner_name(private.path), f"uid {uid}")
    assert_fault(proxy, "down", private.path, DENIED, details=details)
    assert_still_serving(proxy)
    assert private.requests == []


def test_permission_denied_on_the_socket_directory(
    unprivileged_proxy: Callable[[dict[str, Path]], Proxy], raw_app: RawFactory, tmp: Path
) -> None:
    """The socket is open to all but its directory is not searchable by the proxy's user: the
    page shows the mode and owner of what is in the way (the directory) and the proxy's uid."""
    uid, _ = unprivileged()
    locked = tmp / "locked"
    locked.mkdir()
    app = open_to_all(RawApp(locked / "app.sock").__enter__())
    try:
        locked.chmod(0o700 if os.geteuid() == 0 else 0o000)
        ok = open_to_all(raw_app(name="ok"))
        proxy = unprivileged_proxy({"down": app.path, "ok": ok.path})
        mode = stat.filemode(locked.stat().st_mode)
        details = (mode, owner_name(locked), f"uid {uid}")
        assert_fault(proxy, "down", app.path, DENIED, details=details)
        assert_still_serving(proxy)
        assert app.requests == []
    finally:
        locked.chmod(0o700)
        app.__exit__(None, None, None)


# --- what the app says --------------------------------------------------------------------------


async def wait_for_hangup(conn: Conn) -> None:
    """Read until the proxy closes the connection: the app never closes first."""
    while await conn.reader.read(65536):
        pass


def reply(data: bytes, then_close: bool = True) -> Handler:
    """Answer the first request with `data`; then close, or wait for the proxy to hang up."""

    async def handler(conn: Conn) -> None:
        if await conn.request() is None:
            return
        if data:
            await conn.send(data)
        if not then_close:
            await wait_for_hangup(conn)

    return handler


async def close_at_once(conn: Conn) -> None:
    """Accept, then close before reading anything."""


APP_FAULTS: dict[str, tuple[Handler, str]] = {
    "close-after-reading-the-request": (reply(b""), CLOSED_EARLY),
    "close-before-reading": (close_at_once, CLOSED_EARLY),
    "not-http": (reply(b"SSH-2.0-OpenSSH_9.6\r\n", then_close=False), NOT_HTTP),
    "not-http-then-close": (reply(b"\x00\x01\x02 binary junk\r\n\r\n"), NOT_HTTP),
    "html-without-a-head": (reply(b"<html><body>hello</body></html>\n"), NOT_HTTP),
    "head-cut-in-the-middle": (reply(b"HTTP/1.1 200 OK\r\nContent-Le"), NOT_HTTP),
    "status-line-only-then-close": (reply(b"HTTP/1.1 200 OK\r\n"), NOT_HTTP),
}


@pytest.mark.nginx_difference("nginx's own 502 page does not name the app, the socket or the fault")
@pytest.mark.parametrize(("handler", "fault"), list(APP_FAULTS.values()), ids=list(APP_FAULTS))
def test_app_fault_is_named(
    make_proxy: ProxyFactory, raw_app: RawFactory, handler: Handler, fault: str
) -> None:
    app = raw_app(handler, name="bad")
    proxy = with_ok_app(make_proxy, raw_app, app.path)
    assert_fault(proxy, "down", app.path, fault)
    assert_still_serving(proxy)


@pytest.mark.nginx_difference("nginx's own 502 page does not name the fault")
def test_fault_page_for_head_request_has_no_body(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    proxy = with_ok_app(make_proxy, raw_app, tmp / "none.sock")
    with RawClient(proxy.port) as client:
        client.send(b"HEAD /down/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw = client.read_to_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ")
    assert body == b""
    wait_for_line(error_log(proxy), f"{tmp / 'none.sock'}: {MISSING}")


# --- responses cut short ------------------------------------------------------------------------

CUT: dict[str, tuple[bytes, bytes]] = {
    # name: (what the app sends before closing, the body bytes the client may see)
    "content-length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"0123456789",
        b"0123456789",
    ),
    "chunked-after-a-chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"hello",
    ),
    "chunked-inside-a-chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na\r\nwor",
        b"hellowor",
    ),
    "chunked-before-the-last-crlf": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
        b"hello",
    ),
}


@pytest.mark.nginx_difference(
    "with proxy_buffering off nginx 1.22 ends a response the app cut short as if it were complete"
)
@pytest.mark.parametrize(("sent", "body"), list(CUT.values()), ids=list(CUT))
def test_response_cut_short_is_never_complete(
    make_proxy: ProxyFactory, raw_app: RawFactory, sent: bytes, body: bytes
) -> None:
    app = raw_app(reply(sent), name="cut")
    proxy = with_ok_app(make_proxy, raw_app, app.path)
    with RawClient(proxy.port) as client:
        client.send(b"GET /down/big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = client.read_response()  # returns at the end of the message or at close
        assert client.read_to_close() == b""
    assert response.status == 200, response.raw
    assert not response.complete, f"passed on as complete: {response.raw!r}"
    assert response.body == body
    assert not response.raw.endswith(b"0\r\n\r\n")
    line = wait_for_line(error_log(proxy), f"{app.path}: {CUT_SHORT}")
    assert "'down'" in line
    # A real client sees an error, never a short body it would take for the whole.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{proxy.url}/down/big")
    assert_still_serving(proxy)


def test_close_delimited_response_is_complete(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """The control for the tests above: without Content-Length or chunking, the app's close is
    the end of the body, and the client gets a complete response."""
    app = raw_app(reply(b"HTTP/1.1 200 OK\r\n\r\nuntil close"), name="eof")
    proxy = with_ok_app(make_proxy, raw_app, app.path)
    with RawClient(proxy.port) as client:
        client.send(b"GET /down/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = client.read_response()
    assert response.complete
    assert response.body == b"until close"


# --- timeouts -------------------------------------------------------------------------------------


def hang(before: bytes = b"") -> Handler:
    """Read the request, send `before`, then say nothing more until the proxy hangs up."""

    async def handler(conn: Conn) -> None:
        if await conn.request() is None:
            return
        if before:
            await conn.send(before)
        await wait_for_hangup(conn)

    return handler


@pytest.mark.nginx_difference("nginx's own 504 page does not name the app")
def test_app_silent_before_the_head_gets_504(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app(hang(), name="slow")
    proxy = with_ok_app(make_proxy, raw_app, app.path, timeouts='read = "1s"')
    started = time.monotonic()
    response = httpx.get(f"{proxy.url}/down/", timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert TIMED_OUT in response.text
    assert 0.9 <= elapsed < 10, elapsed
    assert app.closed.wait(10), "the proxy kept the app connection open"
    assert_fault(proxy, "down", app.path, TIMED_OUT, status=504)
    assert_still_serving(proxy)


def test_read_timeout_is_measured_from_the_last_byte(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A slow app that keeps sending is not cut: `read` is a silence, not a total duration."""

    async def trickle(conn: Conn) -> None:
        if await conn.request() is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":
            await asyncio.sleep(0.4)  # the app's pace; each gap is under the 1 s read timeout
            await conn.send(bytes([byte]))

    app = raw_app(trickle, name="trickle")
    proxy = with_ok_app(make_proxy, raw_app, app.path, timeouts='read = "1s"')
    response = httpx.get(f"{proxy.url}/down/", timeout=30)
    assert response.status_code == 200
    assert response.text == "abcdef"


@pytest.mark.nginx_difference("nginx's error.log names the errno, not sockgate's fault names")
def test_app_silent_in_the_middle_of_the_body_closes_the_client(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(hang(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"), name="stall")
    proxy = with_ok_app(make_proxy, raw_app, app.path, timeouts='read = "1s"')
    with RawClient(proxy.port) as client:
        started = time.monotonic()
        client.send(b"GET /down/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = client.read_response()
        elapsed = time.monotonic() - started
        assert client.read_to_close() == b""
    assert response.status == 200
    assert not response.complete
    assert response.body == b"0123456789"
    assert 0.9 <= elapsed < 10, elapsed
    assert app.closed.wait(10), "the proxy kept the app connection open"
    line = wait_for_line(error_log(proxy), f"{app.path}: {TIMED_OUT}")
    assert "'down'" in line
    assert_still_serving(proxy)


def test_app_silent_in_the_middle_of_a_chunked_body_closes_the_client(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(
        hang(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        name="stall",
    )
    proxy = with_ok_app(make_proxy, raw_app, app.path, timeouts='read = "1s"')
    with RawClient(proxy.port) as client:
        client.send(b"GET /down/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = client.read_response()
        assert client.read_to_close() == b""
    assert response.status == 200
    assert not response.complete
    assert response.body == b"hello"
    assert not response.raw.endswith(b"0\r\n\r\n")
    assert_still_serving(proxy)
