"""The status page, status.json and its event stream (built-in engine; the nginx engine has
none: marked differences), the control socket and `sockgate status` / `sockgate stop`."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sockgate.cli import main
from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, request_bytes
from tests.support.proc import Proxy, run_sockgate, write_config
from tests.support.rawapp import OK, Conn
from tests.support.status import StatusEvents, app_row, status_json

NO_STATUS_PAGE = "the status page, status.json and its events are built-in engine features"


async def ok_or_500(conn: Conn) -> None:
    """200 "ok", or 500 for targets under /boom."""
    while (request := await conn.request()) is not None:
        if request.target.startswith(b"/boom"):
            await conn.send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
        else:
            await conn.send(OK)


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.nginx_difference(NO_STATUS_PAGE)
def test_status_json_counts_requests_errors_latency_and_recent(
    make_proxy: ProxyFactory, raw_app: RawFactory, tmp: Path
) -> None:
    app = raw_app(ok_or_500, name="a1")
    # Not held: a held request would wait out the 5 s default, as long as httpx's own timeout.
    missing = {"socket": tmp / "missing.sock", "hold": "0s"}
    proxy = make_proxy({"app1": app.path, "app2": missing})
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(3):
            assert client.get(f"/app1/x?i={i}").status_code == 200
        assert client.get("/app1/boom").status_code == 500
        assert client.get("/app2/y").status_code == 502
        doc = status_json(proxy.port)
    assert doc["schema"] == 1
    assert doc["sockgate"]["engine"] == "builtin"
    assert doc["sockgate"]["listen"] == f"127.0.0.1:{proxy.port}"
    one = app_row(doc, "app1")
    assert (one["state"], one["requests"], one["errors"]) == ("up", 4, 1)
    assert one["last_error"]["text"] == "500 for GET /app1/boom"
    assert 0 < one["latency_ms"]["p50"] <= one["latency_ms"]["p99"] < 5000
    assert [(r["method"], r["target"], r["status"]) for r in one["recent"]] == [
        ("GET", "/app1/boom", 500),
        ("GET", "/app1/x?i=2", 200),
        ("GET", "/app1/x?i=1", 200),
        ("GET", "/app1/x?i=0", 200),
    ]
    two = app_row(doc, "app2")
    down = "its folder exists; is the app running?"
    assert (two["state"], two["detail"]) == ("missing", down)
    assert (two["requests"], two["errors"]) == (1, 1)
    assert (
        two["last_error"]["text"]
        == "socket file missing: its folder exists; is the app running? (GET /app2/y)"
    )
    # The status page's own requests are no app's.
    assert sum(a["requests"] for a in status_json(proxy.port)["apps"]) == 5
    assert len(app.requests) == 4  # probing connects, but never sends the app a request


@pytest.mark.nginx_difference(NO_STATUS_PAGE)
def test_root_shows_the_status_page_when_no_app_owns_it(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    for target in ("/", "/_sockgate/"):
        response = httpx.get(f"{proxy.url}{target}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert "<title>sockgate status</title>" in response.text
        assert '"name": "app1"' in response.text  # the embedded document
    redirect = httpx.get(f"{proxy.url}/_sockgate?x=1")
    assert (redirect.status_code, redirect.headers["location"]) == (301, "/_sockgate/?x=1")
    assert httpx.head(f"{proxy.url}/_sockgate/status.json").status_code == 200
    assert httpx.post(f"{proxy.url}/_sockgate/status.json").status_code == 405
    assert httpx.get(f"{proxy.url}/_sockgate/nope").status_code == 404
    assert app.connections == 0 or app.requests == []


def test_the_host_check_comes_first(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    proxy = make_proxy({"app1": raw_app().path})
    for target in ("/", "/_sockgate/", "/_sockgate/status.json"):
        response = httpx.get(f"{proxy.url}{target}", headers={"Host": "evil.example"})
        assert response.status_code == 421


def test_an_app_at_root_keeps_it_and_the_page_can_move(
    make_proxy: ProxyFactory, raw_app: RawFactory, engine: str
) -> None:
    root = raw_app(name="root")
    proxy = make_proxy({"root": {"socket": root.path, "prefix": "/"}}, extra='dashboard = "/st/"')
    assert httpx.get(f"{proxy.url}/").text == "ok"
    assert httpx.get(f"{proxy.url}/_sockgate/").text == "ok"
    if engine == "builtin":
        assert httpx.get(f"{proxy.url}/st/status.json").json()["apps"][0]["name"] == "root"


def test_the_page_can_be_turned_off(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    proxy = make_proxy({"a": raw_app().path}, extra="dashboard = false")
    assert httpx.get(f"{proxy.url}/").status_code == 404
    assert httpx.get(f"{proxy.url}/_sockgate/").status_code == 404


@pytest.mark.nginx_difference(NO_STATUS_PAGE)
def test_the_event_stream_pushes_the_status_as_it_changes(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    with StatusEvents(proxy.port) as events:
        assert events.response.status == 200
        assert events.response.header("content-type") == b"text/event-stream; charset=utf-8"
        first = events.next_doc()
        assert app_row(first, "app1")["requests"] == 0
        assert httpx.get(f"{proxy.url}/app1/x").text == "ok"
        events.wait_for(lambda d: app_row(d, "app1")["requests"] == 1, "one request", 5)
        # The stream itself is no app's stream and no app's request.
        doc = status_json(proxy.port)
        assert app_row(doc, "app1")["streams"] == {"upgrade": 0, "sse": 0}
        assert app_row(doc, "app1")["requests"] == 1


@pytest.mark.nginx_difference(NO_STATUS_PAGE)
def test_open_sse_and_websocket_streams_are_counted_while_open(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    from websockets.sync.client import connect

    proxy = make_proxy({"st": starlette_sock})
    with StatusEvents(proxy.port) as events:
        with RawClient(proxy.port) as sse:
            sse.send(request_bytes("/st/events?n=1000&gap=0.2"))
            sse.body_until(sse.head(), b"data:")
            with connect(f"ws://127.0.0.1:{proxy.port}/st/ws", open_timeout=DEADLINE) as ws:
                ws.send("hi")
                assert ws.recv(timeout=DEADLINE) == "echo: hi"
                events.wait_for(
                    lambda d: app_row(d, "st")["streams"] == {"upgrade": 1, "sse": 1},
                    "one open WebSocket and one open SSE stream",
                )
        doc = events.wait_for(
            lambda d: app_row(d, "st")["streams"] == {"upgrade": 0, "sse": 0}, "both closed"
        )
    st = app_row(doc, "st")
    assert st["requests"] == 2
    assert st["latency_ms"] is None  # streams stay out of latency


def test_the_event_stream_ends_at_once_on_stop(tmp: Path) -> None:
    path = write_config(
        tmp / "sockgate.toml",
        'listen = "127.0.0.1:0"\nworkdir = "work"\n[timeouts]\nshutdown = "30s"\n'
        f'[apps.app1]\nsocket = "{tmp / "a.sock"}"\n',
    )
    proxy = Proxy(path).start()
    try:
        with StatusEvents(proxy.port) as events:
            events.next_doc()
            started = time.monotonic()
            code = proxy.stop()
            assert events.client.closed_by_peer()
        assert code == 0
        assert time.monotonic() - started < 5, "the event stream held the shutdown"
    finally:
        proxy.stop()
    assert "Traceback" not in proxy.output()


def local_address() -> str:
    """This host's address on its main interface (not loopback), as other machines reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("no non-loopback IPv4 route on this machine")
        address = str(s.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this machine")
    return address


def test_only_loopback_clients_get_the_status_page(tmp: Path, raw_app: RawFactory) -> None:
    """A real non-loopback peer: sockgate on all interfaces, reached at this host's own
    address, so the client's address is not 127.0.0.1."""
    app = raw_app()
    address = local_address()
    path = write_config(
        tmp / "sockgate.toml",
        f'listen = "0.0.0.0:0"\nallow_remote = true\nworkdir = "work"\n'
        f'[apps.app1]\nsocket = "{app.path}"\n',
    )
    with Proxy(path) as proxy:
        with httpx.Client(base_url=f"http://{address}:{proxy.port}") as remote:
            headers = {"Host": "localhost", "Accept": "text/html"}
            page = remote.get("/_sockgate/", headers=headers)
            assert page.status_code == 403
            assert "loopback clients only" in page.text
            assert remote.get("/_sockgate/status.json", headers=headers).status_code == 403
            assert remote.get("/_sockgate/events", headers=headers).status_code == 403
            root = remote.get("/", headers=headers)
            assert root.status_code == 404  # as before there was a status page
            assert "routes: /app1/ -&gt; app1" in root.text
            assert remote.get("/app1/x", headers=headers).text == "ok"  # apps as ever
        assert status_json(proxy.port)["apps"][0]["requests"] == 1  # loopback: served


# --- the control socket -------------------------------------------------------------------------


def control_config(tmp: Path, app_path: Path, extra: str = "") -> Path:
    return write_config(
        tmp / "sockgate.toml",
        f'listen = "127.0.0.1:0"\nworkdir = "work"\n{extra}\n[apps.app1]\nsocket = "{app_path}"\n',
    )


def test_status_and_stop_through_the_control_socket(tmp: Path, raw_app: RawFactory) -> None:
    app = raw_app()
    config = control_config(tmp, app.path)
    proxy = Proxy(config).start()
    try:
        ctl = tmp / "work" / "sockgate.ctl"
        mode = os.stat(ctl).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert httpx.get(f"{proxy.url}/app1/x").text == "ok"

        shown = run_sockgate("status", "-c", str(config), cwd=tmp)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("sockgate ")
        assert f"listening on http://127.0.0.1:{proxy.port}/" in lines[0]
        assert lines[1].split()[:4] == ["APP", "PREFIX", "SOCKET", "STATE"]
        assert lines[2].split()[:6] == ["app1", "/app1/", str(app.path), "up", "1", "0"]
        assert "GET /app1/x" in shown.stdout

        as_json = run_sockgate("status", "--json", "-c", str(config), cwd=tmp)
        assert as_json.returncode == 0, as_json.stderr
        doc = json.loads(as_json.stdout)
        assert doc["sockgate"]["pid"] == proxy.proc.pid  # type: ignore[union-attr]
        assert app_row(doc, "app1")["requests"] == 1

        stopped = run_sockgate("stop", "-c", str(config), cwd=tmp)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"stopped sockgate in {tmp / 'work'}"
        assert proxy.proc.wait(10) == 0  # type: ignore[union-attr]
        assert not ctl.exists()
        assert not (tmp / "work" / "sockgate.pid").exists()
    finally:
        proxy.stop()
    assert "stop asked on the control socket" in proxy.output()

    for command in ("status", "stop"):
        gone = run_sockgate(command, "-c", str(config), cwd=tmp)
        assert gone.returncode == 2
        assert gone.stdout == ""
        assert gone.stderr.strip() == (
            f"sockgate: sockgate is not running in {tmp / 'work'} "
            f"(nothing answers on {tmp / 'work' / 'sockgate.ctl'}, "
            f"no live pid in {tmp / 'work' / 'sockgate.pid'})"
        )


def test_a_stale_control_socket_is_replaced_and_a_live_one_refused(
    tmp: Path, raw_app: RawFactory
) -> None:
    app = raw_app()
    config = control_config(tmp, app.path)
    ctl = tmp / "work" / "sockgate.ctl"
    ctl.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(ctl))  # a socket file that answers: another sockgate, as far as we know
        live.listen()
        refused = run_sockgate("run", "-c", str(config), cwd=tmp)
        assert refused.returncode == 2
        assert f"{ctl}: another sockgate answers on this control socket" in refused.stderr
    assert ctl.exists()  # left by a killed process: nobody answers now
    with Proxy(config) as proxy:
        assert run_sockgate("status", "-c", str(config), cwd=tmp).returncode == 0
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600
        del proxy


def test_the_control_socket_answers_only_its_endpoints(tmp: Path, raw_app: RawFactory) -> None:
    app = raw_app()
    config = control_config(tmp, app.path)
    with Proxy(config):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(tmp / "work" / "sockgate.ctl"))
            sock.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert b"known: GET /status.json, POST /reload, POST /stop" in answer


def test_status_with_workers_comes_from_worker_0_and_says_so(
    tmp: Path, raw_app: RawFactory
) -> None:
    app = raw_app()
    config = control_config(tmp, app.path, "workers = 2")
    proxy = Proxy(config).start()
    try:
        proxy.wait_for_output("2 worker processes")
        shown = run_sockgate("status", "--json", "-c", str(config), cwd=tmp)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert (doc["sockgate"]["workers"], doc["sockgate"]["worker"]) == (2, 0)
        assert doc["sockgate"]["pid"] != proxy.proc.pid  # type: ignore[union-attr]
        table = run_sockgate("status", "-c", str(config), cwd=tmp).stdout
        assert "note: counts are worker 0's alone, one of 2 processes" in table
        stopped = run_sockgate("stop", "-c", str(config), cwd=tmp)
        assert stopped.returncode == 0, stopped.stderr
        assert proxy.proc.wait(15) == 0  # type: ignore[union-attr]  # the supervisor too
        assert not (tmp / "work" / "sockgate.ctl").exists()
    finally:
        proxy.stop()


def test_status_on_the_nginx_engine_says_there_is_none(tmp: Path) -> None:
    config = write_config(
        tmp / "sockgate.toml", 'engine = "nginx"\nworkdir = "work"\n[apps.a]\nsocket = "a.sock"\n'
    )
    result = CliRunner().invoke(main, ["status", "-c", str(config)])
    assert result.exit_code == 2
    assert result.output.startswith("sockgate: `sockgate status` asks the built-in")
    assert "the nginx engine has none" in result.output
    # `stop` signals it instead (tests/test_manage.py): here nothing runs.
    result = CliRunner().invoke(main, ["stop", "-c", str(config)])
    assert result.exit_code == 2
    assert result.output.startswith(f"sockgate: sockgate is not running in {tmp / 'work'}")
