"""Behaviours 1-3: longest-prefix routing, the /app1 redirect and 404; the path and query reach
the app byte-exact (stripped or kept), dot segments get 400; the headers the app is told and the
hop-by-hop headers removed in both directions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import RawClient, Response, request_bytes
from tests.support.rawapp import Conn


def fetch(
    port: int, target: str, *, host: str = "127.0.0.1", headers: list[tuple[str, str]] | None = None
) -> Response:
    """One request on its own raw connection; returns the response."""
    with RawClient(port) as client:
        client.send(request_bytes(target, host=host, headers=headers or []))
        return client.response()


# --- 1. routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("nested_first", [False, True], ids=["outer-first", "nested-first"])
def test_longest_prefix_wins_whatever_the_order(
    make_proxy: ProxyFactory, raw_app: RawFactory, nested_first: bool
) -> None:
    outer = raw_app(name="outer")
    nested = raw_app(name="nested")
    apps: dict[str, Path | dict[str, object]] = {
        "app1": outer.path,
        "deep": {"socket": nested.path, "prefix": "/app1/nested/"},
    }
    if nested_first:
        apps = dict(reversed(list(apps.items())))
    proxy = make_proxy(apps)

    assert fetch(proxy.port, "/app1/nested/x?q=1").status == 200
    assert fetch(proxy.port, "/app1/other").status == 200
    # A prefix matches whole segments only: /app1/nestedX belongs to the outer app.
    assert fetch(proxy.port, "/app1/nestedX/y").status == 200

    assert [r.target for r in nested.requests] == [b"/x?q=1"]
    assert [r.target for r in outer.requests] == [b"/other", b"/nestedX/y"]


@pytest.mark.nginx_difference(
    "nginx's $args cannot tell an empty query from none, so `/app1?` redirects to `/app1/`",
    ids=["/app1?-"],
)
@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/app1", b"/app1/"),
        ("/app1?a=1&b=%20x", b"/app1/?a=1&b=%20x"),
        ("/app1?", b"/app1/?"),
        ("/app1/nested?x=y", b"/app1/nested/?x=y"),
    ],
)
def test_prefix_without_slash_redirects_with_query(
    make_proxy: ProxyFactory, raw_app: RawFactory, target: str, location: bytes
) -> None:
    app = raw_app()
    nested = raw_app(name="nested")
    proxy = make_proxy(
        {"app1": app.path, "deep": {"socket": nested.path, "prefix": "/app1/nested/"}}
    )
    response = fetch(proxy.port, target)
    assert response.status == 301
    assert response.header("location") == location
    assert app.connections == 0
    assert nested.connections == 0


def test_redirect_followed_by_httpx_reaches_the_app(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    response = httpx.get(f"{proxy.url}/app1?x=1", follow_redirects=True)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [301]
    assert app.requests[0].target == b"/?x=1"


# `/` without an app of its own shows the status page on the built-in engine: test_status.py.
@pytest.mark.parametrize("target", ["/app2/", "/app", "/APP1/x", "/other/app1/", "/_sockgatex"])
def test_no_matching_prefix_is_404(
    make_proxy: ProxyFactory, raw_app: RawFactory, target: str
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    response = fetch(proxy.port, target)
    assert response.status == 404
    assert app.connections == 0


def test_catch_all_app_gets_what_no_other_prefix_matches(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app1 = raw_app(name="a1")
    root = raw_app(name="root")
    proxy = make_proxy({"root": {"socket": root.path, "prefix": "/"}, "app1": app1.path})
    assert fetch(proxy.port, "/app1/x").status == 200
    assert fetch(proxy.port, "/elsewhere/y?z=1").status == 200
    assert fetch(proxy.port, "/").status == 200
    assert [r.target for r in app1.requests] == [b"/x"]
    assert [r.target for r in root.requests] == [b"/elsewhere/y?z=1", b"/"]


# --- 2. byte-exact paths, strip or keep, dot segments -----------------------------------------

EXACT = [
    ("/app1/", b"/"),
    ("/app1/?x=1", b"/?x=1"),
    ("/app1/a%2Fb/%41%7e?q=%20x&y=/../z", b"/a%2Fb/%41%7e?q=%20x&y=/../z"),
    ("/app1//double//slash", b"//double//slash"),
    ("/app1/caf%C3%A9/x+y;p=1", b"/caf%C3%A9/x+y;p=1"),
    ("/app1/..foo/.well-known/a.b", b"/..foo/.well-known/a.b"),
    ("/app1/x?", b"/x?"),
]


@pytest.mark.nginx_difference(
    "with the prefix stripped nginx forwards its normalised URI: %XX decoded and re-escaped, "
    "an empty `?` dropped",
    ids=["%2Fb", "/app1/x?-"],
)
@pytest.mark.parametrize(("target", "seen"), EXACT)
def test_stripped_path_and_query_reach_the_app_byte_exact(
    make_proxy: ProxyFactory, raw_app: RawFactory, target: str, seen: bytes
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert fetch(proxy.port, target).status == 200
    assert app.requests[0].target == seen
    assert app.requests[0].raw.startswith(b"GET " + seen + b" HTTP/1.1\r\n")


@pytest.mark.parametrize(("target", "_stripped"), EXACT)
def test_kept_prefix_reaches_the_app_unchanged(
    make_proxy: ProxyFactory, raw_app: RawFactory, target: str, _stripped: bytes
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": {"socket": app.path, "strip_prefix": False}})
    assert fetch(proxy.port, target).status == 200
    assert app.requests[0].target == target.encode()


@pytest.mark.nginx_difference(
    "with the prefix stripped nginx forwards its normalised URI, percent-decoded and re-escaped"
)
def test_starlette_sees_the_raw_path_undecoded(
    make_proxy: ProxyFactory, starlette_sock: Path
) -> None:
    proxy = make_proxy({"st": starlette_sock})
    response = fetch(proxy.port, "/st/caf%C3%A9/a%2Fb?q=%41&r=1")
    assert response.status == 200
    seen = json.loads(bytes(response.body))
    assert seen["raw_path"] == "/caf%C3%A9/a%2Fb"
    assert seen["query"] == "q=%41&r=1"


@pytest.mark.nginx_difference(
    "nginx resolves dot segments (also %2e) itself instead of refusing them with 400"
)
@pytest.mark.parametrize(
    "target",
    [
        "/app1/./x",
        "/app1/../app2/x",
        "/app1/x/..",
        "/app1/x/.",
        "/app1/..?q=1",
        "/app1/%2e%2e/app2/x",
        "/app1/%2E%2E/app2/x",
        "/app1/.%2e/app2/x",
        "/app1/%2e/x",
        "/app1/x/%2e%2e%2fapp2/y",
        "/app1/..%2Fapp2/y",
    ],
)
def test_dot_segments_are_refused_with_400(
    make_proxy: ProxyFactory, raw_app: RawFactory, target: str
) -> None:
    app1 = raw_app(name="a1")
    app2 = raw_app(name="a2")
    proxy = make_proxy({"app1": app1.path, "app2": app2.path})
    response = fetch(proxy.port, target)
    assert response.status == 400
    assert app1.connections == 0
    assert app2.connections == 0


# --- 3. headers ---------------------------------------------------------------------------------


def test_host_is_passed_exactly_with_its_port(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path}, extra='allowed_hosts = ["example.test"]')
    host = f"127.0.0.1:{proxy.port}"
    response = httpx.get(f"{proxy.url}/app1/x")
    assert response.status_code == 200
    seen = app.requests[0]
    assert seen.header_all(b"host") == [host.encode()]
    assert seen.header_all(b"x-forwarded-host") == [host.encode()]

    assert fetch(proxy.port, "/app1/y", host="Example.test:8443").status == 200
    seen = app.requests[1]
    assert seen.header_all(b"host") == [b"Example.test:8443"]
    assert seen.header_all(b"x-forwarded-host") == [b"Example.test:8443"]


def test_forwarding_headers_are_added(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert fetch(proxy.port, "/app1/x").status == 200
    seen = app.requests[0]
    assert seen.header_all(b"x-real-ip") == [b"127.0.0.1"]
    assert seen.header_all(b"x-forwarded-for") == [b"127.0.0.1"]
    assert seen.header_all(b"x-forwarded-proto") == [b"http"]
    assert seen.header_all(b"x-forwarded-prefix") == [b"/app1"]


def test_x_forwarded_for_is_appended_to_the_clients(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    headers = [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")]
    assert fetch(proxy.port, "/app1/x", headers=headers).status == 200
    assert app.requests[0].header_all(b"x-forwarded-for") == [b"10.0.0.1, 10.0.0.2, 127.0.0.1"]


def test_client_cannot_spoof_what_the_proxy_knows(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    spoofed = [
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Forwarded-Prefix", "/admin"),
    ]
    assert fetch(proxy.port, "/app1/x", headers=spoofed).status == 200
    seen = app.requests[0]
    assert seen.header_all(b"x-real-ip") == [b"127.0.0.1"]
    assert seen.header_all(b"x-forwarded-proto") == [b"http"]
    assert seen.header_all(b"x-forwarded-host") == [b"127.0.0.1"]
    assert seen.header_all(b"x-forwarded-prefix") == [b"/app1"]


def test_no_forwarded_prefix_when_the_prefix_is_kept(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": {"socket": app.path, "strip_prefix": False}})
    assert fetch(proxy.port, "/app1/x").status == 200
    assert app.requests[0].header(b"x-forwarded-prefix") is None
    assert app.requests[0].header_all(b"x-real-ip") == [b"127.0.0.1"]


def test_starlette_sees_forwarding_headers(make_proxy: ProxyFactory, starlette_sock: Path) -> None:
    proxy = make_proxy({"st": starlette_sock})
    response = httpx.get(f"{proxy.url}/st/hello", headers={"X-Forwarded-For": "192.0.2.7"})
    headers = dict(response.json()["headers"])
    assert headers["host"] == f"127.0.0.1:{proxy.port}"
    assert headers["x-forwarded-for"] == "192.0.2.7, 127.0.0.1"
    assert headers["x-forwarded-prefix"] == "/st"
    assert response.json()["path"] == "/hello"


HOP_BY_HOP_REQUEST = [
    ("Connection", "keep-alive, X-Secret, x-other"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Upgrade", "h2c"),
    ("X-Secret", "hop"),
    ("X-Other", "hop too"),
    ("X-End-To-End", "kept"),
]


@pytest.mark.nginx_difference(
    "nginx removes only its fixed hop-by-hop set, not Proxy-Connection, Trailer "
    "or the headers Connection names"
)
def test_hop_by_hop_request_headers_are_removed(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/x", headers=HOP_BY_HOP_REQUEST))
        assert client.response().status == 200
        # The client's keep-alive is between it and the proxy: the connection still works.
        client.send(request_bytes("/app1/y"))
        assert client.response().status == 200
    seen = app.requests[0]
    names = {n.lower() for n, _ in seen.headers}
    for gone in (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-secret",
        b"x-other",
    ):
        assert gone not in names, (gone, seen.raw)
    assert seen.header_all(b"x-end-to-end") == [b"kept"]


async def hop_by_hop_response(conn: Conn) -> None:
    while await conn.request() is not None:
        await conn.send(
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: X-App-Secret, keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Trailer: X-Checksum\r\n"
            b"TE: trailers\r\n"
            b"Upgrade: h2c\r\n"
            b"X-App-Secret: hop\r\n"
            b"X-Visible: yes\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )


@pytest.mark.nginx_difference(
    "nginx removes only its fixed hop-by-hop set, not Proxy-Connection, Trailer "
    "or the headers Connection names"
)
def test_hop_by_hop_response_headers_are_removed(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(hop_by_hop_response)
    proxy = make_proxy({"app1": app.path})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/x"))
        response = client.response()
    assert response.status == 200
    assert bytes(response.body) == b"hello"
    names = response.names()
    for gone in ("keep-alive", "proxy-connection", "trailer", "te", "upgrade", "x-app-secret"):
        assert gone not in names, (gone, response.headers)
    for value in response.header_all("connection"):
        assert value.lower() in (b"close", b"keep-alive"), response.headers
    assert response.header_all("x-visible") == [b"yes"]
