"""The fixture site of `sockgate lint` as a raw app: tests/fixtures/lint pages, two redirects
and cookies, for an app that believes it lives at / (it also accepts its paths under /app1,
for `strip_prefix = false`)."""

from __future__ import annotations

from pathlib import Path

from tests.support.rawapp import Conn, Request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lint"
PAGES = {"/": "index.html", "/page2.html": "page2.html", "/page3.html": "page3.html"}
COOKIES = {
    "/": [b"session=abc; Path=/; HttpOnly", b"theme=dark"],
    "/page2.html": [b"seen=1; Path=/app1/"],
}
REDIRECTS = {"/redirect": b"/login", "/go": b"page3.html"}


def response(request: Request) -> bytes:
    path = request.target.decode("latin-1").partition("?")[0]
    if path.startswith("/app1/") or path == "/app1":
        path = path.removeprefix("/app1") or "/"
    headers = []
    if path in PAGES:
        # Like a framework that builds absolute URLs from the Host header.
        host = request.header(b"host") or b"localhost:8080"
        body = (FIXTURES / PAGES[path]).read_bytes().replace(b"localhost:8080", host)
        status = b"200 OK"
        headers.append(b"Content-Type: text/html; charset=utf-8")
        headers += [b"Set-Cookie: " + cookie for cookie in COOKIES.get(path, [])]
    elif path in REDIRECTS:
        status, body = b"302 Found", b""
        headers.append(b"Location: " + REDIRECTS[path])
    else:
        status, body = b"404 Not Found", b"not found"
        headers.append(b"Content-Type: text/plain")
    headers.append(b"Content-Length: %d" % len(body))
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


async def serve_site(conn: Conn) -> None:
    while (request := await conn.request()) is not None:
        await conn.send(response(request))
