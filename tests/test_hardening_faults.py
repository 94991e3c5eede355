"""Issue 5, faults: what the app sees when the client walks away, and that a fault never leaves
the proxy (or the app's connection) broken.

Already covered in tests/test_proxy_faults.py, not repeated here:
- the app hangs before the response head: 504 at the read timeout
  (`test_app_silent_before_the_head_gets_504`);
- the app hangs in the middle of the body: the client connection is closed, never completed
  (`test_app_silent_in_the_middle_of_the_body_closes_the_client`, and its chunked twin);
- the app closes in the middle of the response (`test_response_cut_short_is_never_complete`).
Those check that another app is still served afterwards; the test below adds that the app which
misbehaved is served again, on a fresh connection, by the same proxy.

New here: a client that aborts an upload half-way and a client that leaves an SSE stream; in both
the app must see its connection close (within a deadline; for SSE within a second), and a normal
request through the same proxy works afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory, RawFactory
from tests.support.clients import DEADLINE, RawClient, RequestWatcher, request_bytes
from tests.support.proc import Uvicorn
from tests.support.rawapp import Conn, Handler, respond_ok

HOST = "localhost"  # a local name: accepted whatever Host policy the proxy applies
UPLOAD = 1024 * 1024  # the Content-Length the client announces; it sends half of it
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
SEEN_WITHIN = 1.0  # the issue: the app sees a client leave an SSE stream within a second


def abandon(client: RawClient, how: str) -> float:
    """Close the client socket, with a FIN or a reset; returns the time it was closed."""
    if how == "reset":
        # SO_LINGER with a zero timeout: close() sends an RST instead of a FIN.
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closed_at = time.monotonic()
    client.close()
    return closed_at


def assert_normal_request_works(proxy_url: str, prefix: str = "app") -> None:
    """After the fault: a normal request to the same app, through the same proxy."""
    response = httpx.get(f"{proxy_url}/{prefix}/after", timeout=DEADLINE)
    assert response.status_code == 200
    assert response.text == "ok"


# --- after an app fault the same app is served again -------------------------------------------


async def wait_for_hangup(conn: Conn) -> None:
    """Read until the proxy closes the connection: the app never closes first."""
    try:
        while await conn.reader.read(65536):
            pass
    except ConnectionError:
        pass


def first_connection_fails(sent: bytes, *, then_close: bool) -> Handler:
    """The first connection reads a request, sends `sent`, then hangs (until the proxy hangs up)
    or closes; every later connection is a healthy app."""

    async def handler(conn: Conn) -> None:
        if conn.app.connections > 1:  # counted before the handler runs: this is its number
            await respond_ok(conn)
            return
        if await conn.request() is None:
            return
        if sent:
            await conn.send(sent)
        if not then_close:
            await wait_for_hangup(conn)

    return handler


APP_FAULTS: dict[str, tuple[Handler, int]] = {
    # name: (the faulty first connection, the status the client sees)
    "hangs-before-the-head": (first_connection_fails(b"", then_close=False), 504),
    "hangs-mid-body": (
        first_connection_fails(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", then_close=False
        ),
        200,
    ),
    "closes-mid-stream": (
        first_connection_fails(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            then_close=True,
        ),
        200,
    ),
}


@pytest.mark.parametrize(("handler", "status"), list(APP_FAULTS.values()), ids=list(APP_FAULTS))
def test_app_that_faulted_is_served_again_on_a_fresh_connection(
    make_proxy: ProxyFactory, raw_app: RawFactory, handler: Handler, status: int
) -> None:
    """The connection the fault happened on is dropped (never pooled, never reused): the app sees
    it close, and the next request to that app gets a new connection and a normal answer."""
    app = raw_app(handler, name="flaky")
    proxy = make_proxy({"app": app.path}, timeouts='read = "1s"')
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app/fault", host=HOST))
        response = client.head()
        assert response.status == status
        # The exchange ends: the 504 page is complete; a response under way is cut off.
        while not response.complete and client.read_once():
            pass
    assert app.closed.wait(DEADLINE), "the proxy kept the faulted app connection open"
    assert_normal_request_works(proxy.url)
    assert app.connections == 2, "the request after the fault did not use a fresh connection"


# --- the client aborts an upload half-way ------------------------------------------------------


class AbortedUpload:
    """The first connection reads an upload and records what became of it; later connections
    are a healthy app (for the request after the fault)."""

    def __init__(self) -> None:
        self.half_seen = threading.Event()  # the app has read half of the body
        self.watcher = RequestWatcher()
        self.ended_complete: bool | None = None

    async def __call__(self, conn: Conn) -> None:
        if conn.app.connections > 1:
            await respond_ok(conn)
            return
        watcher = self.watcher
        try:
            if await watcher.read_until(conn, lambda w: len(w.body) >= UPLOAD // 2):
                self.half_seen.set()
                # Only the proxy closing the connection ends this wait: the rest never comes.
                await watcher.read_until(conn, lambda w: w.complete)
        except ConnectionError:
            pass  # a reset from the proxy is a close too
        self.ended_complete = watcher.complete


def upload_head(framing: str) -> bytes:
    if framing == "content-length":
        headers = [("Content-Length", str(UPLOAD))]
    else:
        headers = [("Transfer-Encoding", "chunked")]
    return request_bytes("/app/upload", "POST", host=HOST, headers=headers)


def upload_half(framing: str) -> bytes:
    half = os.urandom(UPLOAD // 2)
    if framing == "content-length":
        return half
    return b"%x\r\n%s\r\n" % (len(half), half)  # a whole chunk, and no last chunk


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_aborting_an_upload_closes_the_apps_connection(
    make_proxy: ProxyFactory, raw_app: RawFactory, framing: str, how: str
) -> None:
    """Half of the body, then the client closes: the app must not wait for the rest for as long
    as the body timeouts allow (60 s and 1 h here), its connection is closed within seconds."""
    handler = AbortedUpload()
    app = raw_app(handler, name="upload")
    proxy = make_proxy({"app": app.path})
    with RawClient(proxy.port) as client:
        client.send(upload_head(framing))
        client.send(upload_half(framing))
        assert handler.half_seen.wait(DEADLINE), "the app never received half of the body"
        abandon(client, how)
    assert app.closed.wait(DEADLINE), "the app's connection stayed open after the client left"
    assert handler.ended_complete is False, "the app saw a complete request"
    assert len(handler.watcher.body) < UPLOAD
    assert_normal_request_works(proxy.url)


# --- the client leaves an SSE stream ----------------------------------------------------------


class EndlessEvents:
    """The first connection answers with an event stream, one event every `gap` seconds, and
    records when it notices that the proxy closed the connection (its read ends, or a write
    fails). Later connections are a healthy app."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.gone = threading.Event()
        self.gone_at = 0.0

    async def __call__(self, conn: Conn) -> None:
        if conn.app.connections > 1:
            await respond_ok(conn)
            return
        if await conn.request() is None:
            return
        closed = asyncio.ensure_future(wait_for_hangup(conn))
        try:
            await conn.send(SSE_HEAD)
            # A bounded stream: far longer than the test, so only the client ends it.
            for i in range(int(60 / self.gap)):
                event = b"id: %d\ndata: tick %d\n\n" % (i, i)
                await conn.send(b"%x\r\n%s\r\n" % (len(event), event))
                await asyncio.wait([closed], timeout=self.gap)  # the app's pace, or the end
                if closed.done():
                    break
        except ConnectionError:
            pass  # a write failed: the proxy has gone
        finally:
            self.gone_at = time.monotonic()
            self.gone.set()
            closed.cancel()
            await asyncio.gather(closed, return_exceptions=True)


# busy: an event every 100 ms, so a write soon fails too; quiet: the next event is 5 s away,
# so only noticing the client's close (not a failed write) can tell the app within a second.
STREAMS = {"busy": (0.1, b"data: tick 2\n\n"), "quiet": (5.0, b"data: tick 0\n\n")}


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize(("gap", "until"), list(STREAMS.values()), ids=list(STREAMS))
def test_client_leaving_an_sse_stream_is_seen_by_the_app_within_a_second(
    make_proxy: ProxyFactory, raw_app: RawFactory, gap: float, until: bytes, how: str
) -> None:
    handler = EndlessEvents(gap)
    app = raw_app(handler, name="sse")
    proxy = make_proxy({"app": app.path})
    with RawClient(proxy.port) as client:
        client.send(
            request_bytes("/app/events", host=HOST, headers=[("Accept", "text/event-stream")])
        )
        response = client.head()
        assert response.status == 200
        client.body_until(response, until)
        closed_at = abandon(client, how)
    assert handler.gone.wait(DEADLINE), "the app kept streaming to a client that had left"
    seen_after = handler.gone_at - closed_at
    assert seen_after < SEEN_WITHIN, f"the app saw the client leave after {seen_after:.2f}s"
    assert_normal_request_works(proxy.url)


# --- the same with a real app: Starlette's /events under uvicorn ---------------------------------


@pytest.fixture
def uvicorn_app(tmp: Path) -> Iterator[Uvicorn]:
    """The Starlette test app, with its process at hand (to watch its connections)."""
    with Uvicorn("tests.apps.starlette_app:app", tmp / "st.sock") as server:
        yield server


def socket_fds(pid: int) -> int:
    """How many sockets a process holds open (its listening socket included)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except FileNotFoundError:
            pass  # closed while we looked
    return count


def wait_for_sockets(pid: int, wanted: int, deadline: float) -> float:
    """Until the process holds `wanted` sockets; returns when that was seen (monotonic)."""
    end = time.monotonic() + deadline
    while True:
        now = time.monotonic()
        if socket_fds(pid) == wanted:
            return now
        if now > end:
            raise AssertionError(f"pid {pid} holds {socket_fds(pid)} sockets, not {wanted}")
        time.sleep(0.01)  # /proc gives no event to wait on; bounded by the deadline


def test_client_leaving_starlette_events_is_seen_by_uvicorn_within_a_second(
    make_proxy: ProxyFactory, uvicorn_app: Uvicorn
) -> None:
    """`/events?n=100&gap=0.2` runs for 20 s; the client leaves after two events. uvicorn must
    drop that connection (and with it the stream) within a second: its socket count goes back
    to what it was before the request."""
    assert uvicorn_app.proc is not None
    pid = uvicorn_app.proc.pid
    proxy = make_proxy({"app": uvicorn_app.path})
    idle = socket_fds(pid)
    with RawClient(proxy.port) as client:
        client.send(request_bytes("/app/events?n=100&gap=0.2", host=HOST))
        response = client.head()
        assert response.status == 200
        client.body_until(response, b'data: {"i": 1}')
        assert socket_fds(pid) > idle, "uvicorn holds no connection for the stream"
        closed_at = abandon(client, "fin")
    seen_after = wait_for_sockets(pid, idle, DEADLINE) - closed_at
    assert seen_after < SEEN_WITHIN, f"uvicorn saw the client leave after {seen_after:.2f}s"
    response_after = httpx.get(f"{proxy.url}/app/after", timeout=DEADLINE)
    assert response_after.status_code == 200
    assert response_after.json()["path"] == "/after"
