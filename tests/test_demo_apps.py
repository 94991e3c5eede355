"""The demo apps: driven directly through ASGI, then for real behind uvicorn on Unix sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import unix_connect

from sockgate.demo.apps import ASGIApp, Message, Scope, clock, echo
from sockgate.demo.run import DEMO_APPS, GRACEFUL_SHUTDOWN
from tests.support.proc import Uvicorn

TIMEOUT = 5.0

# --- a tiny ASGI harness ------------------------------------------------------------------------


def call(
    app: ASGIApp, scope: Scope, incoming: Sequence[Message], until_sent: int = 1
) -> list[Message]:
    """Run `app` and return what it sent.

    `receive()` hands out `incoming` in order; after that it blocks until the app has sent
    `until_sent` messages, then reports that the client disconnected.
    """
    pending = list(incoming)
    sent: list[Message] = []

    async def run() -> None:
        enough = asyncio.Event()

        async def receive() -> Message:
            if pending:
                return pending.pop(0)
            await enough.wait()
            return {"type": f"{scope['type']}.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if len(sent) >= until_sent:
                enough.set()

        async with asyncio.timeout(TIMEOUT):
            await app(scope, receive, send)

    asyncio.run(run())
    return sent


def http_scope(
    method: str, path: str, query: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": None,
        "server": None,
    }


def ws_scope(path: str) -> Scope:
    return {**http_scope("GET", path), "type": "websocket", "scheme": "ws", "subprotocols": []}


def get(app: ASGIApp, path: str, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers and body of a bodiless request."""
    start, *bodies = call(app, http_scope(method, path), [{"type": "http.request"}])
    assert start["type"] == "http.response.start"
    assert not bodies[-1].get("more_body", False)
    return start["status"], dict(start["headers"]), b"".join(body["body"] for body in bodies)


# --- unit: echo ---------------------------------------------------------------------------------


def test_echo_describes_a_post_with_query_and_body() -> None:
    scope = http_scope("POST", "/a/b", b"x=1&y=%20", [(b"x-forwarded-prefix", b"/echo")])
    chunks: list[Message] = [
        {"type": "http.request", "body": b"caf\xc3\xa9 ", "more_body": True},
        {"type": "http.request", "body": b"\xff", "more_body": False},
    ]
    start, body = call(echo, scope, chunks)
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {
        "method": "POST",
        "path": "/a/b",
        "query": "x=1&y=%20",
        "headers": [["x-forwarded-prefix", "/echo"]],
        "body": "café \ufffd",
        "body_bytes": 7,
    }


def test_echo_sends_nothing_when_the_client_leaves_mid_body() -> None:
    chunks: list[Message] = [
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert call(echo, http_scope("PUT", "/"), chunks) == []


# --- unit: clock --------------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every URL-bearing attribute value and the text of every script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("href", "src", "action")]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def test_clock_page_is_html_with_relative_urls_only() -> None:
    status, headers, body = get(clock, "/")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/html")
    page = body.decode()
    links = _Links()
    links.feed(page)
    assert links.scripts
    assert not [url for url in links.urls if url.startswith("/") or "://" in url]
    script = "\n".join(links.scripts)
    assert 'new EventSource("events")' in script
    assert 'new URL("ws", location.href)' in script
    # No absolute path such as "/events" or "/ws" in any string literal.
    assert not re.findall(r"""["'`]/""", script)


def test_clock_head_of_the_page_is_allowed() -> None:
    assert get(clock, "/", method="HEAD")[0] == 200


@pytest.mark.parametrize("path", ["/nope", "/events/", "/ws/x", "/index.html"])
def test_clock_unknown_path_is_404(path: str) -> None:
    status, headers, body = get(clock, path)
    assert (status, body) == (404, b"404 Not Found\n")
    assert headers[b"content-type"].startswith(b"text/plain")


@pytest.mark.parametrize(("path", "allow"), [("/", b"GET, HEAD"), ("/events", b"GET")])
def test_clock_other_methods_are_405(path: str, allow: bytes) -> None:
    status, headers, _ = get(clock, path, method="POST")
    assert (status, headers[b"allow"]) == (405, allow)


def test_clock_events_stream_until_the_client_disconnects() -> None:
    # The harness disconnects once the head and one event are out; the app must then return.
    start, event = call(clock, http_scope("GET", "/events"), [], until_sent=2)
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache"
    assert event["more_body"] is True
    match = re.fullmatch(rb"data: (\S+)\n\n", event["body"])
    assert match
    assert datetime.fromisoformat(match[1].decode()).tzinfo is not None


def test_clock_websocket_echoes_text_and_bytes() -> None:
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.receive", "bytes": b"\x00\xff"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    assert call(clock, ws_scope("/ws"), incoming) == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\xff"},
    ]


@pytest.mark.parametrize(("app", "path"), [(clock, "/"), (clock, "/events"), (echo, "/ws")])
def test_websocket_elsewhere_is_refused(app: ASGIApp, path: str) -> None:
    sent = call(app, ws_scope(path), [{"type": "websocket.connect"}])
    assert [message["type"] for message in sent] == ["websocket.close"]


@pytest.mark.parametrize("app", [clock, echo])
def test_lifespan_is_acknowledged(app: ASGIApp) -> None:
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    assert call(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, incoming) == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


# --- integration: real processes on real Unix sockets -------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))  # short: socket paths max 107 bytes
    yield path
    shutil.rmtree(path)


@pytest.fixture
def demo(workdir: Path) -> Iterator[dict[str, Path]]:
    """Each demo app under uvicorn on its socket, as `sockgate demo` runs them."""
    sockets = {name: workdir / f"{name}.sock" for name in DEMO_APPS}
    option = ("--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN))
    with (
        Uvicorn(DEMO_APPS["clock"], sockets["clock"], *option),
        Uvicorn(DEMO_APPS["echo"], sockets["echo"], *option),
    ):
        yield sockets


def client(socket: Path) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=os.fspath(socket))
    return httpx.Client(transport=transport, base_url="http://demo", timeout=TIMEOUT)


def test_echo_answers_over_its_socket(demo: dict[str, Path]) -> None:
    with client(demo["echo"]) as http:
        response = http.post("/x/y?q=1", content=b"ping", headers={"X-Forwarded-Prefix": "/echo"})
    assert response.status_code == 200
    report = response.json()
    assert (report["method"], report["path"], report["query"]) == ("POST", "/x/y", "q=1")
    assert (report["body"], report["body_bytes"]) == ("ping", 4)
    assert ["x-forwarded-prefix", "/echo"] in report["headers"]


def test_clock_page_over_its_socket(demo: dict[str, Path]) -> None:
    with client(demo["clock"]) as http:
        page, missing = http.get("/"), http.get("/missing")
    assert page.status_code == 200
    assert 'new EventSource("events")' in page.text
    assert missing.status_code == 404


def read_events(lines: Iterator[str], count: int) -> list[list[str]]:
    """The first `count` events of an SSE stream, each as its list of lines."""
    events: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        elif current:
            events.append(current)
            current = []
            if len(events) == count:
                return events
    raise AssertionError(f"the stream ended after {len(events)} event(s)")


def test_clock_events_arrive_one_per_second(demo: dict[str, Path]) -> None:
    with client(demo["clock"]) as http, http.stream("GET", "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        first, second = read_events(response.iter_lines(), 2)
    assert first[0].startswith("data: ")
    assert second[0].startswith("data: ")
    assert (len(first), len(second)) == (1, 1)
    one = datetime.fromisoformat(first[0].removeprefix("data: "))
    two = datetime.fromisoformat(second[0].removeprefix("data: "))
    assert one.replace(microsecond=0) < two.replace(microsecond=0)
    assert 0 < (two - one).total_seconds() < 1.5


def test_clock_websocket_echoes_over_its_socket(demo: dict[str, Path]) -> None:
    with unix_connect(os.fspath(demo["clock"]), "ws://localhost/ws", open_timeout=TIMEOUT) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff"


def test_websocket_on_another_path_gets_403(demo: dict[str, Path]) -> None:
    with (
        pytest.raises(InvalidStatus) as refused,
        unix_connect(os.fspath(demo["clock"]), "ws://localhost/nope", open_timeout=TIMEOUT),
    ):
        pass
    assert refused.value.response.status_code == 403
