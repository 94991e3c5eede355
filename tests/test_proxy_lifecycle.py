"""Behaviours 7 (client timeouts) and 10 (logs and lifecycle): a slow client head gets 408 and
is closed, idle keep-alive connections are closed; access.log in nginx's combined format plus
rt= and app=, error.log; the pid file; SIGINT/SIGTERM finish what is under way and exit 0."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, request_bytes, wait_gate
from tests.support.proc import wait_for_line
from tests.support.rawapp import OK, Conn

# nginx's combined format, then sockgate's request time and app name.
COMBINED = re.compile(
    r"^(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} "
    r'[+-]\d{4})\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" rt=(?P<rt>\d+\.\d{3}) app=(?P<app>\S+)$'
)


def logs(tmp: Path) -> Path:
    return tmp / "work" / "logs"


# --- 7. client timeouts -------------------------------------------------------------------------


@pytest.mark.nginx_difference("nginx closes a slow client without sending 408")
def test_slow_request_head_gets_408_and_is_closed(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, timeouts='client_header = "1s"')
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"GET /app1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        started = time.monotonic()
        client.read_to_close()
        waited = time.monotonic() - started
        assert client.responses, f"no response before the close: {bytes(client.received)!r}"
        assert client.responses[0].status == 408
    assert waited < 4
    assert app.connections == 0


def test_trickling_request_head_is_cut_off_at_the_deadline(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """The deadline runs from the first byte: sending a byte now and then does not extend it."""
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, timeouts='client_header = "1s"')
    head = b"GET /app1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    with RawClient(proxy.port, timeout=0.2) as client:
        started = time.monotonic()
        closed = False
        for byte in head:
            if not client.send(bytes([byte])):
                closed = True
                break
            try:
                # Paces the trickle, and notices the proxy's answer as soon as it comes.
                if not client.read_once():
                    closed = True
                    break
            except TimeoutError:
                continue
            if client.responses and client.responses[0].complete:
                client.sock.settimeout(5)
                client.read_to_close()
                closed = True
                break
            if time.monotonic() - started > 8:
                break
        elapsed = time.monotonic() - started
    assert closed, "the proxy let a trickling client hold the connection"
    assert elapsed < 4
    if client.responses:
        assert client.responses[0].status == 408
    assert app.connections == 0


def test_connection_without_a_byte_is_closed_after_client_header(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, timeouts='client_header = "1s"')
    with RawClient(proxy.port, timeout=5) as client:
        started = time.monotonic()
        client.read_to_close()
        waited = time.monotonic() - started
    assert waited < 4


@pytest.mark.nginx_difference("nginx sends `Connection: keep-alive` on every keep-alive response")
def test_idle_keep_alive_connection_is_closed_after_keepalive(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, timeouts='client_header = "30s"\nkeepalive = "1s"')
    with RawClient(proxy.port, timeout=5) as client:
        client.send(request_bytes("/app1/x"))
        response = client.response()
        assert response.status == 200
        assert response.header("connection") is None
        idle_from = time.monotonic()
        client.read_to_close()
        idle = time.monotonic() - idle_from
        assert len(client.responses) == 1, "the proxy sent something on an idle connection"
    assert 0.5 <= idle < 4, f"closed after {idle:.2f}s idle"


@pytest.mark.nginx_difference("nginx's own 504 page does not name the app")
def test_app_that_never_answers_gets_504(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    gate = threading.Event()

    async def silent(conn: Conn) -> None:
        if await conn.request() is not None:
            await wait_gate(gate)

    app = raw_app(silent)
    proxy = make_proxy({"app1": app.path}, timeouts='read = "1s"')
    try:
        response = httpx.get(f"{proxy.url}/app1/slow", timeout=DEADLINE)
    finally:
        gate.set()
    assert response.status_code == 504
    assert "app1" in response.text


# --- 10. logs -----------------------------------------------------------------------------------


def test_access_log_uses_combined_format_with_time_and_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    response = httpx.get(
        f"{proxy.url}/app1/hello?x=1",
        headers={"User-Agent": "probe/1.0", "Referer": "http://ref.test/page"},
    )
    assert response.status_code == 200
    line = wait_for_line(logs(tmp) / "access.log", "/app1/hello?x=1")
    match = COMBINED.match(line)
    assert match, line
    assert match["addr"] == "127.0.0.1"
    assert match["user"] == "-"
    assert match["request"] == "GET /app1/hello?x=1 HTTP/1.1"
    assert match["status"] == "200"
    assert match["bytes"] == "2"
    assert match["referer"] == "http://ref.test/page"
    assert match["agent"] == "probe/1.0"
    assert match["app"] == "app1"
    assert float(match["rt"]) < 5


def test_access_log_escapes_what_could_forge_or_break_a_line(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    """As nginx does: a quote, a backslash and bytes outside printable ASCII in the logged
    fields are written as \\xHH, so a client cannot end a field early or forge a line."""
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    agent = b'evil" "x\\y\xc3\xa9'
    with RawClient(proxy.port) as client:
        client.send(
            b"GET /app1/escaped HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + agent + b"\r\n"
            b'Referer: http://a.test/"q"\r\n\r\n'
        )
        assert client.response().status == 200
    line = wait_for_line(logs(tmp) / "access.log", "/app1/escaped")
    match = COMBINED.match(line)
    assert match, line
    assert match["agent"] == r"evil\x22 \x22x\x5Cy\xC3\xA9"
    assert match["referer"] == r"http://a.test/\x22q\x22"
    assert match["request"] == "GET /app1/escaped HTTP/1.1"


def test_access_log_for_local_answers(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    missing = httpx.get(f"{proxy.url}/nowhere/x", headers={"User-Agent": ""})
    assert missing.status_code == 404
    line = wait_for_line(logs(tmp) / "access.log", "/nowhere/x")
    match = COMBINED.match(line)
    assert match, line
    assert match["status"] == "404"
    assert match["app"] == "-"
    assert match["referer"] == "-"
    # Like nginx's $body_bytes_sent: the body only, not the head.
    assert int(match["bytes"]) == len(missing.content)


def test_access_log_times_a_slow_request(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    gate = threading.Event()
    seen = threading.Event()

    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            seen.set()
            await wait_gate(gate)
            await conn.send(OK)

    app = raw_app(slow)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        try:
            client.send(request_bytes("/app1/slow"))
            assert seen.wait(DEADLINE)
            # The app holds the response until the proxy has surely been waiting a while.
            assert not gate.wait(0.5)
        finally:
            gate.set()
        assert client.response().status == 200
    line = wait_for_line(logs(tmp) / "access.log", "/app1/slow")
    match = COMBINED.match(line)
    assert match, line
    assert float(match["rt"]) >= 0.5


@pytest.mark.nginx_difference("nginx's error.log names the errno, not sockgate's fault names")
def test_error_log_records_a_502(make_proxy: ProxyFactory, tmp: Path) -> None:
    missing = tmp / "nothing-here.sock"
    proxy = make_proxy({"app1": {"socket": missing, "hold": "0s"}})
    response = httpx.get(f"{proxy.url}/app1/x")
    assert response.status_code == 502
    line = wait_for_line(logs(tmp) / "error.log", "GET /app1/x HTTP/1.1")
    assert "app1" in line
    assert str(missing) in line
    assert "socket file missing" in line
    access = wait_for_line(logs(tmp) / "access.log", "/app1/x")
    match = COMBINED.match(access)
    assert match, access
    assert match["status"] == "502"
    assert match["app"] == "app1"


# --- 10. lifecycle ------------------------------------------------------------------------------


def test_pid_file_while_running_and_removed_after(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert proxy.proc is not None
    pid_file = tmp / "work" / "sockgate.pid"
    assert pid_file.read_text().strip() == str(proxy.proc.pid)
    assert proxy.stop() == 0
    assert not pid_file.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_with_exit_0(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path, sig: signal.Signals
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert httpx.get(f"{proxy.url}/app1/").status_code == 200
    assert proxy.stop(sig) == 0
    assert not (tmp / "work" / "sockgate.pid").exists()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE),
    ):
        pass


class HeldResponse:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen = threading.Event()
        self.gate_opened = False

    async def __call__(self, conn: Conn) -> None:
        while await conn.request() is not None:
            self.seen.set()
            self.gate_opened = await wait_gate(self.gate)
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nfinished well")


def wait_refused(port: int, deadline: float = DEADLINE) -> None:
    """Until a new connection to the proxy is refused (it stopped accepting)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        except OSError:
            pass
        time.sleep(0.05)  # a connect retry: no event tells when the listener is gone
    raise AssertionError(f"port {port} still accepts connections")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_request_under_way_finishes_on_stop(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path, sig: signal.Signals
) -> None:
    held = HeldResponse()
    app = raw_app(held)
    proxy = make_proxy({"app1": app.path})
    assert proxy.proc is not None
    with RawClient(proxy.port) as client:
        try:
            client.send(request_bytes("/app1/slow"))
            assert held.seen.wait(DEADLINE)
            proxy.proc.send_signal(sig)
            # Shutdown has begun once the listener is gone; only then may the app answer.
            wait_refused(proxy.port)
        finally:
            held.gate.set()
        response = client.response()
        assert response.status == 200
        assert bytes(response.body) == b"finished well"
        assert [v.lower() for v in response.header_all("connection")] == [b"close"]
        assert client.closed_by_peer()
    assert held.gate_opened
    assert proxy.proc.wait(DEADLINE) == 0
    assert not (tmp / "work" / "sockgate.pid").exists()
    line = wait_for_line(logs(tmp) / "access.log", "/app1/slow")
    assert " 200 13 " in line


def test_stop_during_a_streamed_body_closes_after_it(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    """A stop that comes while a response body streams: the body is finished, then the
    connection is closed at once (it is not kept alive until the shutdown deadline)."""
    gate = threading.Event()

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            await wait_gate(gate)
            await conn.send(b"world")

    app = raw_app(handler)
    proxy = make_proxy({"app1": app.path}, timeouts='shutdown = "30s"')
    assert proxy.proc is not None
    with RawClient(proxy.port) as client:
        gate.set()  # a first exchange, so that the second one runs on a pooled connection
        client.send(request_bytes("/app1/x"))
        assert bytes(client.response().body) == b"helloworld"
        gate.clear()
        client.send(request_bytes("/app1/x"))
        response = client.head()
        client.body_until(response, b"hello")
        proxy.proc.send_signal(signal.SIGTERM)
        wait_refused(proxy.port)
        started = time.monotonic()
        gate.set()
        client.wait(lambda: response.complete, "the end of the body")
        assert bytes(response.body) == b"helloworld"
        assert client.closed_by_peer()
        assert proxy.proc.wait(DEADLINE) == 0
    # Not held until the 30 s shutdown deadline.
    assert time.monotonic() - started < 5


def test_idle_keep_alive_connection_is_closed_on_stop(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, timeouts='shutdown = "30s"')
    assert proxy.proc is not None
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/x"))
        assert client.response().status == 200
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert client.closed_by_peer()
        assert proxy.proc.wait(DEADLINE) == 0
    # Not held until the 30 s shutdown deadline.
    assert time.monotonic() - started < 5


@pytest.mark.nginx_difference(
    "nginx's graceful stop keeps open tunnels until timeouts.shutdown (worker_shutdown_timeout)"
)
def test_open_websocket_is_closed_on_stop(
    make_proxy: ProxyFactory, starlette_sock: Path, tmp: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock}, timeouts='shutdown = "30s"')
    assert proxy.proc is not None
    with connect(f"ws://127.0.0.1:{proxy.port}/st/ws", open_timeout=DEADLINE) as ws:
        ws.send("before")
        assert ws.recv(timeout=DEADLINE) == "echo: before"
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGINT)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=DEADLINE)
        assert proxy.proc.wait(DEADLINE) == 0
    # The tunnel is closed at once, not after the 30 s shutdown deadline.
    assert time.monotonic() - started < 5
    assert not (tmp / "work" / "sockgate.pid").exists()
