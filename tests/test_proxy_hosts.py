"""DNS rebinding: a page whose name resolves to 127.0.0.1 must not reach the apps."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import exchange


def _get(port: int, host: bytes, path: bytes = b"/app1/x") -> tuple[int, bytes]:
    response, _ = exchange(port, b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host))
    return response.status, bytes(response.body)


@pytest.mark.parametrize(
    "host", [b"evil.example", b"evil.example:8080", b"localhost.evil.example", b"192.168.1.5"]
)
def test_foreign_host_gets_421_and_never_reaches_the_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, host: bytes
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    status, body = _get(proxy.port, host)
    assert status == 421
    assert b"allowed_hosts" in body
    assert app.raw == b""
    # The proxy still answers local names on a new connection.
    assert _get(proxy.port, b"localhost:%d" % proxy.port)[0] == 200


# A NAME.localhost name is an app's own origin, or no app's (tests/test_host_routes.py).
@pytest.mark.parametrize("host", [b"localhost", b"127.0.0.1", b"127.0.0.2:8080", b"[::1]:8080"])
def test_local_names_reach_the_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, host: bytes
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert _get(proxy.port, host)[0] == 200
    assert app.requests[0].header(b"host") == host


def test_allowed_hosts_widens_access(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, extra='allowed_hosts = ["my.example", "*.dev.test"]')
    assert _get(proxy.port, b"my.example:8080")[0] == 200
    assert _get(proxy.port, b"api.dev.test")[0] == 200
    assert _get(proxy.port, b"other.example")[0] == 421


def test_star_allows_any_host(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, extra='allowed_hosts = ["*"]')
    assert _get(proxy.port, b"anything.example")[0] == 200


@pytest.mark.nginx_difference("nginx's 421 answer is the same plain text for every client")
def test_421_page_is_html_for_browsers(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    response = httpx.get(
        f"{proxy.url}/app1/", headers={"Host": "evil.example", "Accept": "text/html"}
    )
    assert response.status_code == 421
    assert "text/html" in response.headers["content-type"]
    assert "allowed_hosts" in response.text
