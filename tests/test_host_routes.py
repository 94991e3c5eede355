"""Each app its own origin: every app is also served at the root of http://NAME.localhost:PORT/
(and at the names of its `hosts`), with nothing stripped, rewritten or added for a prefix; other
local names are routed by path as before, a foreign Host still gets 421, and a *.localhost name
that is no app's gets a 404 listing the app hosts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from sockgate import config
from sockgate.config import Config, Listen, reconfig
from sockgate.errors import ConfigError
from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, exchange
from tests.support.proc import write_config
from tests.support.rawapp import Conn


def at(host: str, proxy_port: int) -> dict[str, str]:
    return {"Host": f"{host}:{proxy_port}"}


def test_an_app_is_served_at_the_root_of_its_own_host(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"app1": starlette_sock})
    got = httpx.get(f"{proxy.url}/", headers=at("app1.localhost", proxy.port), timeout=10)
    assert got.status_code == 200
    seen = got.json()
    assert seen["path"] == "/"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["host"] == f"app1.localhost:{proxy.port}"
    assert headers["x-forwarded-host"] == f"app1.localhost:{proxy.port}"
    assert "x-forwarded-prefix" not in headers
    assert "x-script-name" not in headers
    # Every path is the app's, the status page's prefix and the app's own prefix included.
    for path in ("/_sockgate/", "/app1/x", "/deep/er?q=1"):
        got = httpx.get(f"{proxy.url}{path}", headers=at("app1.localhost", proxy.port))
        assert got.json()["raw_path"] == path.partition("?")[0], path
    # The prefix route is still there, beside it.
    assert httpx.get(f"{proxy.url}/app1/x").json()["path"] == "/x"


async def login_redirect(conn: Conn) -> None:
    while await conn.request() is not None:
        await conn.send(
            b"HTTP/1.1 302 Found\r\nLocation: /login\r\n"
            b"Set-Cookie: session=1; Path=/\r\nContent-Length: 0\r\n\r\n"
        )


def test_redirects_and_cookies_stay_on_the_apps_origin(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(login_redirect)
    proxy = make_proxy({"app1": app.path})
    own = httpx.get(f"{proxy.url}/", headers=at("app1.localhost", proxy.port))
    assert own.status_code == 302
    assert own.headers["location"] == "/login"  # not moved under a prefix
    assert own.headers["set-cookie"] == "session=1; Path=/"
    under = httpx.get(f"{proxy.url}/app1/")
    assert under.headers["location"] == "/app1/login"
    assert under.headers["set-cookie"] == "session=1; Path=/app1/"


def test_websocket_and_sse_at_the_apps_host(make_proxy: ProxyFactory, starlette_sock: Path) -> None:
    proxy = make_proxy({"st": starlette_sock})
    host = f"st.localhost:{proxy.port}"
    # A client that resolves st.localhost itself (as browsers do): the URL's host is the Host.
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE)
    with connect(f"ws://{host}/ws", sock=sock, open_timeout=DEADLINE) as ws:
        ws.send("hi")
        assert ws.recv(timeout=DEADLINE) == "echo: hi"
    with httpx.stream(
        "GET", f"{proxy.url}/events?n=3&gap=0.05", headers={"Host": host}, timeout=10
    ) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        data = [line for line in events.iter_lines() if line.startswith("data: ")]
    assert [json.loads(line[6:])["i"] for line in data] == [0, 1, 2]


def test_more_names_and_patterns_from_hosts(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy(
        {"notes": {"socket": app.path, "hosts": ["notes.test", "*.notes.localhost"]}}
    )
    hosts = (b"notes.test", b"NOTES.test.", b"a.notes.localhost", b"b.c.notes.localhost")
    for count, host in enumerate(hosts, 1):
        response, _ = exchange(proxy.port, b"GET /x HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        assert response.status == 200, host
        assert len(app.requests) == count
        assert app.requests[-1].target == b"/x"
        assert app.requests[-1].header(b"x-forwarded-prefix") is None


def test_foreign_hosts_are_refused_and_unknown_local_names_list_the_app_hosts(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path, "notes": {"socket": app.path, "prefix": "/n/"}})
    refused, _ = exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert refused.status == 421
    unknown, _ = exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x.localhost:8080\r\n\r\n")
    assert unknown.status == 404
    assert b"no app has the host x.localhost" in unknown.body
    assert b"app hosts: app1.localhost, notes.localhost" in unknown.body
    assert app.raw == b""


def test_host_routes_off_routes_every_local_name_by_path(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, extra="host_routes = false")
    response, _ = exchange(proxy.port, b"GET /app1/x HTTP/1.1\r\nHost: app1.localhost\r\n\r\n")
    assert response.status == 200
    assert app.requests[-1].target == b"/x"
    assert app.requests[-1].header(b"x-forwarded-prefix") == b"/app1"


def test_a_host_name_serves_one_app(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "sockgate.toml",
        '[apps.notes]\nsocket = "/tmp/n.sock"\n'
        '[apps.other]\nsocket = "/tmp/o.sock"\nhosts = ["notes.localhost"]\n',
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "apps.other.hosts: 'notes.localhost' is already the host of app 'notes'" in str(
        caught.value
    )
    bad_names = ('"notes.test:8080"', '"http://x"', '"a..b"', "1", '"*"', '"a.localhost"')
    prefix_routed = ('"localhost"', '"LocalHost."', '"127.0.0.1"', '"*.localhost"')
    for bad in (*bad_names, *prefix_routed):
        path.write_text(f'[apps.a]\nsocket = "/tmp/a.sock"\nhosts = [{bad}]\n')
        with pytest.raises(ConfigError) as caught:
            config.load(path)
        assert "apps.a.hosts" in str(caught.value), bad
        if bad in prefix_routed:
            assert "is routed by prefix" in str(caught.value), bad
        if bad == '"a.localhost"':
            assert "the app's own host already" in str(caught.value)
    # Two apps whose names differ in case alone would share a host.
    path.write_text('[apps.Notes]\nsocket = "/tmp/a.sock"\n[apps.notes]\nsocket = "/tmp/b.sock"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "apps 'Notes' and 'notes' would both be 'notes.localhost'" in str(caught.value)
    path.write_text(
        'host_routes = false\n[apps.Notes]\nsocket = "/tmp/a.sock"\n'
        '[apps.notes]\nsocket = "/tmp/b.sock"\n'
    )
    assert len(config.load(path).apps) == 2


def test_a_reload_says_host_routes_changed() -> None:
    on = Config(None, Listen("127.0.0.1", 0), Path("/w"))
    off = Config(None, Listen("127.0.0.1", 0), Path("/w"), host_routes=False)
    assert "host_routes" in reconfig.compare(on, off).summary()
