"""Apps under a prefix, end to end with a scripted app: the rewrite rule table (Location, Refresh,
Set-Cookie) and the prefix headers, on both engines."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ENGINES, ProxyFactory, RawFactory
from tests.support.clients import RawClient, Response, request_bytes
from tests.support.proc import Proxy, free_port, write_config
from tests.support.rawapp import Conn, RawApp


@pytest.fixture(params=ENGINES, scope="module")
def engine(request: pytest.FixtureRequest) -> str:
    """Module-scoped here, so one proxy per engine serves the whole rule table."""
    return str(request.param)


async def emit(conn: Conn) -> None:
    """Answer with the response headers the request lists in X-Emit (a JSON list of pairs)."""
    while (request := await conn.request()) is not None:
        spec = json.loads(request.header(b"x-emit") or b"[]")
        head = b"".join(f"{name}: {value}\r\n".encode() for name, value in spec)
        await conn.send(b"HTTP/1.1 302 Found\r\n" + head + b"Content-Length: 0\r\n\r\n")


@dataclass
class Table:
    proxy: Proxy
    app: RawApp

    def send(self, path: str, *headers: tuple[str, str], host: str = "") -> Response:
        with RawClient(self.proxy.port) as client:
            emit_header = ("X-Emit", json.dumps([list(h) for h in headers]))
            client.send(request_bytes(path, host=host or self.host, headers=[emit_header]))
            return client.response()

    @property
    def host(self) -> str:
        return f"localhost:{self.proxy.port}"


@pytest.fixture(scope="module")
def table(engine: str) -> Iterator[Table]:
    tmp = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))
    port = free_port() if engine == "nginx" else 0
    config = f"""\
listen = "127.0.0.1:{port}"
workdir = "work"
engine = "{engine}"
allowed_hosts = ["example.test"]
[apps.app1]
socket = "{tmp}/emit.sock"
[apps.off]
socket = "{tmp}/emit.sock"
rewrite = false
[apps.kept]
socket = "{tmp}/emit.sock"
strip_prefix = false
[apps.nested]
socket = "{tmp}/emit.sock"
prefix = "/app1/nested/"
"""
    try:
        with RawApp(tmp / "emit.sock", emit) as app:
            proxy = Proxy(write_config(tmp / "sockgate.toml", config), engine=engine).start()
            try:
                yield Table(proxy, app)
            finally:
                assert proxy.stop() == 0
                assert "Traceback" not in proxy.output()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# One row per rule: what the app sends, what the client gets; HOST is the request's Host
# (localhost:PORT).
LOCATION = {
    "root": ("/", "/app1/"),
    "root-relative": ("/login", "/app1/login"),
    "query-fragment": ("/login?next=/x&a=%20#top", "/app1/login?next=/x&a=%20#top"),
    "only-looks-like-prefix": ("/app10/x", "/app1/app10/x"),
    "under-prefix": ("/app1/x", "/app1/x"),
    "is-the-mount": ("/app1", "/app1"),
    "own-origin": ("http://HOST/login?a=1", "http://HOST/app1/login?a=1"),
    "own-origin-root": ("http://HOST/", "http://HOST/app1/"),
    "own-origin-under-prefix": ("http://HOST/app1/x", "http://HOST/app1/x"),
    "own-origin-empty-path": ("http://HOST", "http://HOST/app1/"),
    "own-origin-upper-case": ("http://LocalHost:PORT/x", "http://LocalHost:PORT/app1/x"),
    "own-origin-app10": ("http://HOST/app10/x", "http://HOST/app1/app10/x"),
    "relative": ("login", "login"),
    "dot-dot": ("../x", "../x"),
    "query-only": ("?page=2", "?page=2"),
    "scheme-relative": ("//evil.example/x", "//evil.example/x"),
    "other-origin": ("http://evil.example/x", "http://evil.example/x"),
    "https-own-host": ("https://HOST/x", "https://HOST/x"),
}


def fill(text: str, table: Table) -> str:
    return text.replace("HOST", table.host).replace("PORT", str(table.proxy.port))


@pytest.mark.nginx_difference(
    "proxy_redirect compares a fixed string: the host's case must match, an empty path is not "
    "rewritten, and http://HOST/app10 passes as if under /app1",
    ids=["own-origin-empty-path", "own-origin-upper-case", "own-origin-app10"],
)
@pytest.mark.parametrize(("sent", "seen"), LOCATION.values(), ids=LOCATION.keys())
def test_location(table: Table, sent: str, seen: str) -> None:
    response = table.send("/app1/go", ("Location", fill(sent, table)))
    assert response.status == 302
    assert response.header_all("location") == [fill(seen, table).encode()]


REFRESH = {
    "url": ("5; url=/later", "5; url=/app1/later"),
    "own-origin": ("0;url=http://HOST/x?y#z", "0;url=http://HOST/app1/x?y#z"),
    "under-prefix": ("1; url=/app1/x", "1; url=/app1/x"),
    "relative": ("1; url=next", "1; url=next"),
    "seconds-only": ("30", "30"),
    "quoted": ("1; url='/x'", "1; url='/app1/x'"),
    "spaces-around-equals": ("1; URL = /x", "1; URL = /app1/x"),
    "without-url": ("1; /x", "1; /app1/x"),
}


@pytest.mark.nginx_difference(
    "nginx rewrites the Refresh URL only right after a literal `url=`, unquoted",
    ids=["quoted", "spaces-around-equals", "without-url"],
)
@pytest.mark.parametrize(("sent", "seen"), REFRESH.values(), ids=REFRESH.keys())
def test_refresh(table: Table, sent: str, seen: str) -> None:
    response = table.send("/app1/", ("Refresh", fill(sent, table)))
    assert response.header_all("refresh") == [fill(seen, table).encode()]


COOKIE = {
    "path-root": ("a=1; Path=/", "a=1; Path=/app1/"),
    "path-x": ("a=1; Path=/x", "a=1; Path=/app1/x"),
    "attributes-untouched": (
        "a=1; Domain=localhost; path=/; HttpOnly; SameSite=Lax; Max-Age=60",
        "a=1; Domain=localhost; path=/app1/; HttpOnly; SameSite=Lax; Max-Age=60",
    ),
    "upper-case-attribute": ("a=1; PATH=/x", "a=1; PATH=/app1/x"),
    "no-path": ("a=1; HttpOnly", "a=1; HttpOnly"),
    "under-prefix": ("a=1; Path=/app1/x", "a=1; Path=/app1/x"),
    "only-looks-like-prefix": ("a=1; Path=/app10", "a=1; Path=/app1/app10"),
    "quoted": ('a=1; Path="/x"', 'a=1; Path="/app1/x"'),
}


@pytest.mark.nginx_difference(
    "proxy_cookie_path matches the Path value as written, quotes included",
    ids=["quoted"],
)
@pytest.mark.parametrize(("sent", "seen"), COOKIE.values(), ids=COOKIE.keys())
def test_set_cookie(table: Table, sent: str, seen: str) -> None:
    response = table.send("/app1/", ("Set-Cookie", sent))
    assert response.header_all("set-cookie") == [seen.encode()]


def test_several_set_cookie_headers_are_each_rewritten(table: Table) -> None:
    response = table.send(
        "/app1/",
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/b; Secure"),
        ("Set-Cookie", "c=3"),
        ("Location", "/next"),
    )
    assert response.header_all("set-cookie") == [
        b"a=1; Path=/app1/",
        b"b=2; Path=/app1/b; Secure",
        b"c=3",
    ]
    assert response.header_all("location") == [b"/app1/next"]


def test_a_nested_prefix_is_its_own_mount(table: Table) -> None:
    response = table.send("/app1/nested/", ("Location", "/app1/x"), ("Set-Cookie", "a=1; Path=/"))
    assert response.header_all("location") == [b"/app1/nested/app1/x"]
    assert response.header_all("set-cookie") == [b"a=1; Path=/app1/nested/"]


def test_own_origin_is_whatever_host_the_client_used(table: Table) -> None:
    location = ("Location", "http://example.test/x")
    response = table.send("/app1/", location, host="example.test")
    assert response.header_all("location") == [b"http://example.test/app1/x"]
    response = table.send("/app1/", location)
    assert response.header_all("location") == [b"http://example.test/x"]


@pytest.mark.parametrize("path", ["/off/", "/kept/"], ids=["rewrite-false", "prefix-kept"])
def test_without_rewriting_everything_passes_unchanged(table: Table, path: str) -> None:
    sent = [
        ("Location", "/login"),
        ("Location", f"http://{table.host}/x"),
        ("Refresh", "0; url=/x"),
        ("Set-Cookie", "a=1; Path=/"),
    ]
    response = table.send(path, *sent)
    got = [(n.decode().lower(), v.decode()) for n, v in response.headers]
    for name, value in sent:
        assert (name.lower(), value) in got


# --- prefix headers -----------------------------------------------------------------------------

SPOOFED = [("X-Forwarded-Prefix", "/evil"), ("X-Script-Name", "/evil"), ("X-Mount", "/evil")]


def told(app: RawApp) -> dict[str, list[bytes]]:
    seen = app.requests[-1]
    return {name: seen.header_all(name.encode()) for name, _ in SPOOFED}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {},
            {"X-Forwarded-Prefix": [b"/app1"], "X-Script-Name": [b"/app1"], "X-Mount": [b"/evil"]},
        ),
        (
            {"prefix_headers": ["X-Script-Name"]},
            {"X-Script-Name": [b"/app1"], "X-Mount": [b"/evil"]},
        ),
        ({"prefix_headers": ["X-Mount"]}, {"X-Mount": [b"/app1"]}),
        ({"prefix_headers": []}, {"X-Mount": [b"/evil"]}),
        ({"strip_prefix": False}, {"X-Mount": [b"/evil"]}),
    ],
    ids=["default", "script-name-only", "custom", "none", "prefix-kept"],
)
def test_prefix_headers_and_spoofed_copies(
    make_proxy: ProxyFactory,
    raw_app: RawFactory,
    spec: dict[str, object],
    expected: dict[str, list[bytes]],
) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": {"socket": app.path, **spec}})
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app1/x", headers=SPOOFED))
        assert client.response().status == 200
    assert told(app) == {name: expected.get(name, []) for name, _ in SPOOFED}
