"""Each app its own origin, in headless Chromium on both engines (issue 19): at
http://NAME.localhost:PORT/ (Chromium resolves *.localhost to loopback itself) an app's cookies
and localStorage are its own, six open SSE streams to one app do not hold back a request to
another, and an app that only works at `/` works, where its prefix route shows the failure that
`sockgate lint` reports. The prefix routes are the contrast: one origin, one host, shared by all.

The apps are scripted raw apps (tests/support/rawapp.py), one handler per behaviour, so that
what each app received is on record."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import ProxyFactory, RawFactory
from tests.support.browser import chromium
from tests.support.proc import Proxy
from tests.support.rawapp import Conn, Handler

pytestmark = pytest.mark.timeout(120)

DEADLINE_MS = 10_000  # for what should take milliseconds: generous, never a measure


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def host_url(proxy: Proxy, app: str) -> str:
    return f"http://{app}.localhost:{proxy.port}"


def visit(page: Page, url: str) -> None:
    """Open `url` in the page; it must be the app's page (a 200), not the proxy's error."""
    response = page.goto(url, timeout=DEADLINE_MS)
    assert response is not None, url
    assert response.status == 200, f"GET {url}: {response.status}\n{response.text()}"


def path_of(target: bytes) -> bytes:
    return target.partition(b"?")[0]


async def respond(
    conn: Conn,
    body: bytes | str,
    *,
    status: bytes = b"200 OK",
    content_type: bytes = b"text/html; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    data = body.encode() if isinstance(body, str) else body
    head = [
        b"HTTP/1.1 " + status,
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % len(data),
        b"Cache-Control: no-store",
        *(name + b": " + value for name, value in headers),
    ]
    await conn.send(b"\r\n".join(head) + b"\r\n\r\n" + data)


async def not_found(conn: Conn) -> None:
    await respond(conn, b"not found", status=b"404 Not Found", content_type=b"text/plain")


# --- 1. cookies and localStorage are the app's own ---------------------------------------------


def keeper(name: str) -> Handler:
    """An app that keeps state in the browser. /login: a session cookie from the app (header)
    and, from its script, a cookie and a localStorage entry; /cookies: the Cookie header it
    received; /peek: a page that shows the localStorage it can read."""

    async def handle(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            path = path_of(request.target)
            if path.endswith(b"/login"):
                await respond(
                    conn,
                    "<!doctype html><p id=done></p><script>"
                    f"document.cookie = 'theme={name}; path=/';"
                    f"localStorage.setItem('owner', '{name}');"
                    "document.getElementById('done').textContent = 'stored';"
                    "</script>",
                    headers=((b"Set-Cookie", f"session={name}; Path=/".encode()),),
                )
            elif path.endswith(b"/cookies"):
                seen = request.header(b"cookie") or b""
                await respond(conn, seen, content_type=b"text/plain")
            elif path.endswith(b"/peek"):
                await respond(
                    conn,
                    "<!doctype html><pre id=seen></pre><script>"
                    "document.getElementById('seen').textContent ="
                    " JSON.stringify(Object.assign({}, localStorage));"
                    "</script>",
                )
            else:
                await not_found(conn)

    return handle


def log_in(page: Page, url: str) -> None:
    visit(page, f"{url}/login")
    page.wait_for_function(
        "() => document.getElementById('done').textContent === 'stored'", timeout=DEADLINE_MS
    )


def cookies_sent(page: Page, url: str) -> dict[str, str]:
    """The cookies the app at `url` receives from the browser, as the app saw them."""
    visit(page, f"{url}/cookies")
    header = page.text_content("body") or ""
    pairs = (part.strip().partition("=") for part in header.split(";") if part.strip())
    return {name: value for name, _, value in pairs}


def storage_seen(page: Page, url: str) -> dict[str, str]:
    """The localStorage a page of the app at `url` can read."""
    visit(page, f"{url}/peek")
    page.wait_for_function(
        "() => document.getElementById('seen').textContent !== ''", timeout=DEADLINE_MS
    )
    seen: dict[str, str] = json.loads(page.text_content("#seen") or "")
    return seen


def test_cookies_and_local_storage_stay_with_the_apps_host(
    make_proxy: ProxyFactory, raw_app: RawFactory, browser: Browser
) -> None:
    app1 = raw_app(keeper("app1"), name="app1")
    app2 = raw_app(keeper("app2"), name="app2")
    proxy = make_proxy({"app1": app1.path, "app2": app2.path})
    one, two = host_url(proxy, "app1"), host_url(proxy, "app2")
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, one)
        # app1 is sent its cookies back (the reading works) ...
        assert cookies_sent(page, one) == {"session": "app1", "theme": "app1"}
        assert storage_seen(page, one) == {"owner": "app1"}
        # ... app2, on the same proxy and port, neither app1's cookies nor its storage.
        assert cookies_sent(page, two) == {}
        assert storage_seen(page, two) == {}
        assert all(r.header(b"cookie") is None for r in app2.requests)

        # Two apps that use the same cookie name do not overwrite each other's.
        log_in(page, two)
        assert cookies_sent(page, two) == {"session": "app2", "theme": "app2"}
        assert cookies_sent(page, one) == {"session": "app1", "theme": "app1"}
        assert storage_seen(page, one) == {"owner": "app1"}
        assert storage_seen(page, two) == {"owner": "app2"}
        held = {(c["name"], c["value"], c["domain"], c["path"]) for c in context.cookies()}
        assert held == {
            ("session", "app1", "app1.localhost", "/"),
            ("theme", "app1", "app1.localhost", "/"),
            ("session", "app2", "app2.localhost", "/"),
            ("theme", "app2", "app2.localhost", "/"),
        }
    finally:
        context.close()

    # The contrast: under prefixes, on one origin, a page of app2 reads what app1's script
    # stored, and app2 is sent the cookie app1's script set (Path is no boundary for scripts).
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, f"{proxy.url}/app1")
        assert storage_seen(page, f"{proxy.url}/app2") == {"owner": "app1"}
        assert cookies_sent(page, f"{proxy.url}/app2").get("theme") == "app1"
    finally:
        context.close()


# --- 2. six SSE streams to one app's host do not hold back another app --------------------------


class Streams:
    """How many SSE streams an app holds open right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def change(self, by: int) -> None:
        with self._lock:
            self.open += by


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
FIRST_EVENT = b"data: open\n\n"

# The page opens six EventSource streams to `events` (relative: it works at a host's root and
# under a prefix alike) and counts those that delivered their first event, and any error (an
# EventSource that errs reconnects: its readyState leaves OPEN).
STREAMING_PAGE = """<!doctype html><title>{name}</title><p id=name>{name}</p><script>
window.opened = 0; window.errors = 0;
window.sources = Array.from({{length: {count}}}, (_, i) => {{
  const source = new EventSource('events?i=' + i);
  source.addEventListener('message', () => {{ window.opened += 1; }}, {{once: true}});
  source.addEventListener('error', () => {{ window.errors += 1; }});
  return source;
}});
</script>"""


def streamer(name: str, streams: Streams, count: int) -> Handler:
    """An app whose page (/ or /PREFIX/) opens `count` SSE streams to it; /events sends one
    event and then stays open until the proxy closes it. `count` 0: a plain page."""

    async def handle(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            path = path_of(request.target)
            if path.endswith(b"/events"):
                streams.change(+1)  # before the event: the page sees it after this
                try:
                    await conn.send(SSE_HEAD + b"%x\r\n%s\r\n" % (len(FIRST_EVENT), FIRST_EVENT))
                    while await conn.reader.read(65536):
                        pass
                finally:
                    streams.change(-1)
                return
            if path.endswith(b"/"):
                await respond(conn, STREAMING_PAGE.format(name=name, count=count))
            else:
                await not_found(conn)

    return handle


def open_streams(page: Page, url: str, count: int = 6) -> None:
    visit(page, url)
    page.wait_for_function(f"() => window.opened === {count}", timeout=DEADLINE_MS)
    assert page.evaluate("window.errors") == 0


def all_open(page: Page) -> bool:
    return bool(
        page.evaluate("window.errors === 0 && window.sources.every(s => s.readyState === 1)")
    )


def test_six_open_streams_to_one_apps_host_do_not_hold_back_another_app(
    make_proxy: ProxyFactory, raw_app: RawFactory, browser: Browser
) -> None:
    streams1 = Streams()
    app1 = raw_app(streamer("app1", streams1, 6), name="app1")
    app2 = raw_app(streamer("app2", Streams(), 0), name="app2")
    proxy = make_proxy({"app1": app1.path, "app2": app2.path})
    context = browser.new_context()
    try:
        # A tab of app1 with six streams open: Chromium's six HTTP/1.1 connections to that host.
        tab1 = context.new_page()
        open_streams(tab1, f"{host_url(proxy, 'app1')}/")
        assert streams1.open == 6
        # Another tab loads app2 at its own host meanwhile, at once ...
        tab2 = context.new_page()
        visit(tab2, f"{host_url(proxy, 'app2')}/")
        assert tab2.text_content("#name") == "app2"
        # ... while all six streams are still open, in the browser and at the app.
        assert all_open(tab1)
        assert streams1.open == 6
        tab2.close()
        tab1.close()

        # The contrast on one host (the prefix routes): with six streams to /app1/ open, a
        # request to /app2/ waits for one of them to end. The request is sent from the page
        # itself (same origin), so that it can be watched without blocking.
        tab = context.new_page()
        open_streams(tab, f"{proxy.url}/app1/")
        served = len(app2.requests)
        tab.evaluate(
            "window.seventh = undefined;"
            "fetch('/app2/').then(r => r.text()).then(t => { window.seventh = t; });"
            "true"  # not the promise, which evaluate would wait for
        )
        # The one wait for something not to happen: 1.5 s in which the seventh request stays
        # queued in the browser (it would take milliseconds; it waits for as long as the
        # streams stay open).
        with pytest.raises(PlaywrightTimeout):
            tab.wait_for_function("() => window.seventh !== undefined", timeout=1500)
        assert len(app2.requests) == served
        assert all_open(tab)
        tab.evaluate("window.sources[0].close()")  # a connection to the host is free again
        tab.wait_for_function("() => window.seventh !== undefined", timeout=DEADLINE_MS)
        assert "<title>app2</title>" in tab.evaluate("window.seventh")
        tab.close()
    finally:
        context.close()


# --- 3. an app that only works at / ------------------------------------------------------------

ROOT_ONLY_PAGE = b"""<!doctype html>
<html>
<head>
<title>root only</title>
<script src="/static/app.js" defer></script>
</head>
<body>
<p id="data">loading</p>
<a href="/about">about</a>
</body>
</html>
"""
ROOT_ONLY_SCRIPT = b"""
fetch('/api/data')
  .then(response => response.json())
  .then(data => { document.getElementById('data').textContent = data.message; });
"""


async def root_only(conn: Conn) -> None:
    """An app that assumes it is served at /: absolute links to its script and its API, no
    base-path setting."""
    while (request := await conn.request()) is not None:
        path = path_of(request.target)
        if path == b"/":
            await respond(conn, ROOT_ONLY_PAGE)
        elif path == b"/static/app.js":
            await respond(conn, ROOT_ONLY_SCRIPT, content_type=b"text/javascript")
        elif path == b"/api/data":
            await respond(
                conn, b'{"message": "data from the api"}', content_type=b"application/json"
            )
        else:
            await not_found(conn)


def lint_json(proxy: Proxy, app: str) -> tuple[int, dict[str, Any]]:
    """`sockgate lint --json APP` of the proxy's config, through the running proxy."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sockgate",
            "lint",
            "--json",
            app,
            "-c",
            str(proxy.config_path),
            "--listen",
            f"127.0.0.1:{proxy.port}",
        ],
        cwd=proxy.config_path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.stdout, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, document


def test_an_app_that_only_works_at_the_root_works_at_its_host_and_fails_under_its_prefix(
    make_proxy: ProxyFactory, raw_app: RawFactory, browser: Browser
) -> None:
    app = raw_app(root_only, name="app1")
    proxy = make_proxy({"app1": app.path})
    context = browser.new_context()
    try:
        page = context.new_page()
        # At its host: the script loads, fetches the data, and the page shows it.
        visit(page, f"{host_url(proxy, 'app1')}/")
        page.wait_for_function(
            "() => document.getElementById('data').textContent === 'data from the api'",
            timeout=DEADLINE_MS,
        )
        assert {path_of(r.target) for r in app.requests} >= {b"/", b"/static/app.js", b"/api/data"}

        # Under its prefix: the page comes, but its script is looked for at the proxy's root,
        # where no app is, so the data never comes.
        before = len(app.requests)
        with page.expect_response(lambda r: r.url.endswith("/static/app.js")) as script:
            visit(page, f"{proxy.url}/app1/")
        assert script.value.url == f"{proxy.url}/static/app.js"
        assert script.value.status == 404
        assert page.title() == "root only"
        page.wait_for_load_state("load")  # the deferred script would have run by now
        assert page.text_content("#data") == "loading"
        assert [path_of(r.target) for r in app.requests[before:]] == [b"/"]
    finally:
        context.close()

    # `sockgate lint` names the links that leave the prefix: the failure the browser showed.
    code, document = lint_json(proxy, "app1")
    assert code == 1, document
    [linted] = document["apps"]
    origin = proxy.url
    found = {
        (f["page"].removeprefix(origin), f["where"], f["value"], f["resolved"].removeprefix(origin))
        for f in linted["findings"]
    }
    assert found == {
        ("/app1/", "script[src]", "/static/app.js", "/static/app.js"),
        ("/app1/", "a[href]", "/about", "/about"),
    }
